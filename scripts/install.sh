#!/usr/bin/env bash
# Install anprd as a systemd service: the package and its dependencies, the `anprd` command,
# the unit files, a default config and the models. `make install` runs this.
#
# Usage: scripts/install.sh [--no-venv] [--python PATH] [--no-deps] [--no-units] [-h]
#
#   --no-venv      install into an existing interpreter (--python / $ANPRD_PYTHON / python3)
#                  instead of a private venv at $PREFIX/lib/anprd/venv
#   --python PATH  interpreter to build the venv with, or to install into with --no-venv
#   --no-deps      install only anprd itself (dependencies already present; tests)
#   --no-units     skip the systemd unit files
#
# Environment:
#   PREFIX            install prefix (default /usr/local)
#   DESTDIR           staging root for packaging; every path below is under it (default: none)
#   SYSCONFDIR        configuration root (default /etc): $SYSCONFDIR/anprd/config.yaml
#   UNITDIR           systemd unit directory (default $SYSCONFDIR/systemd/system)
#   SYSUSERSDIR       sysusers.d directory (default $SYSCONFDIR/sysusers.d)
#   ANPRD_PYTHON      same as --python
#   ANPRD_CONFIG_SRC  default config to install (default <repo>/config.example.yaml)
#   ANPRD_CONSTRAINTS pip constraints pinning the dependencies (default <repo>/constraints.txt
#                     when it exists)
#   ANPRD_PIP_ARGS    extra pip arguments, e.g. "--no-build-isolation --no-index"
#
# An existing $SYSCONFDIR/anprd/config.yaml is never overwritten: the new default is written
# next to it as config.yaml.new. Re-running upgrades the package in place.

set -euo pipefail

die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'install.sh: %s\n' "$*"; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
SYSCONFDIR=${SYSCONFDIR:-/etc}
UNITDIR=${UNITDIR:-$SYSCONFDIR/systemd/system}
SYSUSERSDIR=${SYSUSERSDIR:-$SYSCONFDIR/sysusers.d}
PYTHON=${ANPRD_PYTHON:-}
CONFIG_SRC=${ANPRD_CONFIG_SRC:-$REPO/config.example.yaml}
CONSTRAINTS=${ANPRD_CONSTRAINTS:-$REPO/constraints.txt}
USE_VENV=1
WITH_DEPS=1
WITH_UNITS=1
GROUP=anprd

while [ $# -gt 0 ]; do
    case $1 in
        --no-venv) USE_VENV=0 ;;
        --python) [ $# -ge 2 ] || die "--python needs a path"; PYTHON=$2; shift ;;
        --python=*) PYTHON=${1#--python=} ;;
        --no-deps) WITH_DEPS=0 ;;
        --no-units) WITH_UNITS=0 ;;
        -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown option: $1 (try --help)" ;;
    esac
    shift
done

case $PREFIX in /*) ;; *) die "PREFIX must be an absolute path, got '$PREFIX'" ;; esac
case $SYSCONFDIR in /*) ;; *) die "SYSCONFDIR must be an absolute path, got '$SYSCONFDIR'" ;; esac
[ -f "$REPO/pyproject.toml" ] || die "no pyproject.toml in $REPO; run from an anprd checkout"
[ -f "$CONFIG_SRC" ] || die "default config $CONFIG_SRC not found (set ANPRD_CONFIG_SRC)"
PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null 2>&1 || die "python interpreter '$PYTHON' not found (use --python)"

pip_install() {  # pip_install PYTHON [pip args...]: install the checkout with pinned deps
    local python=$1; shift
    local args=(--disable-pip-version-check --no-input "$@")
    if [ "$WITH_DEPS" = 0 ]; then
        args+=(--no-deps)
    elif [ -f "$CONSTRAINTS" ]; then
        args+=(--constraint "$CONSTRAINTS")
    fi
    # shellcheck disable=SC2206  # word splitting of ANPRD_PIP_ARGS is intended
    args+=(${ANPRD_PIP_ARGS:-})
    "$python" -m pip install "${args[@]}" "$REPO"
}

# --- Package and command -------------------------------------------------------------------
mkdir -p "$DESTDIR$PREFIX/bin"
if [ "$USE_VENV" = 1 ]; then
    VENV=$PREFIX/lib/anprd/venv
    if [ ! -x "$DESTDIR$VENV/bin/python" ]; then
        say "creating venv $DESTDIR$VENV"
        "$PYTHON" -m venv "$DESTDIR$VENV"
    fi
    say "installing anprd into $DESTDIR$VENV"
    pip_install "$DESTDIR$VENV/bin/python"
    if [ -n "$DESTDIR" ]; then
        # Scripts were written with the staging path in their #! lines; point them at the
        # final location (venvs are not relocatable otherwise).
        staged=$(grep -rlIF -- "$DESTDIR$VENV" "$DESTDIR$VENV/bin" || true)
        while IFS= read -r file; do
            if [ -n "$file" ]; then sed -i "s|$DESTDIR$VENV|$VENV|g" "$file"; fi
        done <<< "$staged"
    fi
    SCRIPT=$VENV/bin/anprd
else
    if [ -n "$DESTDIR" ]; then
        # --ignore-installed: without it pip would uninstall the interpreter's live copy of
        # anprd (outside DESTDIR) before staging the new one.
        pip_install "$PYTHON" --root "$DESTDIR" --ignore-installed
    else
        pip_install "$PYTHON"
    fi
    SCRIPT=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/anprd
fi
[ -e "$DESTDIR$SCRIPT" ] || die "pip did not create $DESTDIR$SCRIPT (no [project.scripts] anprd entry?)"
ln -sfn "$SCRIPT" "$DESTDIR$PREFIX/bin/anprd"
say "command $DESTDIR$PREFIX/bin/anprd -> $SCRIPT"

# --- Data: models, event schema, docs --------------------------------------------------------
DATADIR=$PREFIX/share/anprd
install -d -m 0755 "$DESTDIR$DATADIR"
if [ -d "$REPO/models" ]; then
    rm -rf "$DESTDIR$DATADIR/models.new"
    cp -R "$REPO/models" "$DESTDIR$DATADIR/models.new"
    chmod -R u=rwX,go=rX "$DESTDIR$DATADIR/models.new"
    # Swap in whole, so a running daemon never sees a half-copied model.
    rm -rf "$DESTDIR$DATADIR/models.old"
    [ -d "$DESTDIR$DATADIR/models" ] && mv "$DESTDIR$DATADIR/models" "$DESTDIR$DATADIR/models.old"
    mv "$DESTDIR$DATADIR/models.new" "$DESTDIR$DATADIR/models"
    rm -rf "$DESTDIR$DATADIR/models.old"
fi
if [ -d "$REPO/schema" ]; then
    install -d -m 0755 "$DESTDIR$DATADIR/schema"
    install -m 0644 "$REPO"/schema/*.json "$DESTDIR$DATADIR/schema/"
fi
install -D -m 0644 "$REPO/README.md" "$DESTDIR$PREFIX/share/doc/anprd/README.md"
say "data in $DESTDIR$DATADIR"

# --- Group that may read the config (camera passwords) ---------------------------------------
install -d -m 0755 "$DESTDIR$SYSUSERSDIR"
cat > "$DESTDIR$SYSUSERSDIR/anprd.conf" <<EOF
# anprd runs as a DynamicUser=yes service; this static group lets it read $SYSCONFDIR/anprd.
g $GROUP -
EOF
chmod 0644 "$DESTDIR$SYSUSERSDIR/anprd.conf"
HAVE_GROUP=0
if [ -z "$DESTDIR" ] && [ "$(id -u)" = 0 ]; then
    if ! getent group "$GROUP" >/dev/null; then
        if command -v systemd-sysusers >/dev/null 2>&1; then
            systemd-sysusers "$SYSUSERSDIR/anprd.conf"
        else
            groupadd --system "$GROUP"
        fi
    fi
    HAVE_GROUP=1
fi

# --- Config ------------------------------------------------------------------------------------
CONFDIR=$SYSCONFDIR/anprd
install -d -m 0750 "$DESTDIR$CONFDIR"
TARGET=$DESTDIR$CONFDIR/config.yaml
if [ -e "$TARGET" ]; then
    TARGET=$TARGET.new
    say "keeping existing $DESTDIR$CONFDIR/config.yaml; new default written to $TARGET"
fi
install -m 0640 "$CONFIG_SRC" "$TARGET"
if [ "$HAVE_GROUP" = 1 ]; then
    chgrp "$GROUP" "$DESTDIR$CONFDIR" "$TARGET"
else
    say "note: make $CONFDIR and its files group '$GROUP' on the target (mode 0750/0640)"
fi
say "config $TARGET"

# --- systemd units -----------------------------------------------------------------------------
if [ "$WITH_UNITS" = 1 ]; then
    install -d -m 0755 "$DESTDIR$UNITDIR"
    for unit in anprd.service anprd@.service; do
        # The unit files name /usr/local and /etc; rewrite them for this PREFIX and SYSCONFDIR.
        sed -e "s|/usr/local/|$PREFIX/|g" -e "s|/etc/anprd/|$SYSCONFDIR/anprd/|g" \
            "$REPO/systemd/$unit" > "$DESTDIR$UNITDIR/$unit.tmp"
        chmod 0644 "$DESTDIR$UNITDIR/$unit.tmp"
        mv "$DESTDIR$UNITDIR/$unit.tmp" "$DESTDIR$UNITDIR/$unit"
    done
    say "units in $DESTDIR$UNITDIR"
    if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
fi

say "done. Next: edit $CONFDIR/config.yaml, then: systemctl enable --now anprd"
