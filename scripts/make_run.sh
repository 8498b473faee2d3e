#!/usr/bin/env bash
# `make run`: the daemon on the bundled config with a subscriber printing its events.
#
# Starts `anprd subscribe` in the background (events on stdout, one JSON object per line), runs
# `anprd run --config config.yaml` in the foreground (logs on stderr) until the sample clip ends,
# gives the subscriber a second for the last events, stops it and exits with the daemon's status.
#
# Environment: ANPRD (default .venv/bin/anprd), CONFIG (default config.yaml), ENDPOINT (default
# tcp://127.0.0.1:5555, the config's publisher.endpoint).
set -euo pipefail

cd "$(dirname "$0")/.."
ANPRD=${ANPRD:-.venv/bin/anprd}
CONFIG=${CONFIG:-config.yaml}
ENDPOINT=${ENDPOINT:-tcp://127.0.0.1:5555}

[ -x "$ANPRD" ] || { echo "make_run.sh: $ANPRD not found; run make setup" >&2; exit 2; }

# The subscriber connects first and ZeroMQ reconnects until the daemon binds, so no event of the
# clip is missed (a PUB socket drops messages for subscribers that are not connected yet).
"$ANPRD" subscribe "$ENDPOINT" &
subscriber=$!

stop_subscriber() {
    if kill -0 "$subscriber" 2>/dev/null; then
        kill -TERM "$subscriber" 2>/dev/null || true
    fi
    wait "$subscriber" 2>/dev/null || true
}
trap stop_subscriber EXIT

status=0
"$ANPRD" run --config "$CONFIG" || status=$?

sleep 1  # the publisher lingers to deliver the last events; let the subscriber print them
stop_subscriber
trap - EXIT
exit "$status"
