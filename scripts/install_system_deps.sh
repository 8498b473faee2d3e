#!/usr/bin/env bash
# Install the Debian packages anprd's set-up, tests and tools need: python3-venv, a GStreamer RTSP
# server (for the live source tests, run by scripts/rtsp_server.py under the system python3) and
# the TrueType fonts the synthetic plate generator renders with. Idempotent: does nothing when
# everything is installed.
set -euo pipefail

packages=(
    # `make setup`'s `python3 -m venv .venv` (Debian leaves ensurepip out of python3 itself)
    python3-venv
    # RTSP test server (scripts/rtsp_server.py) and the decoders it needs
    gir1.2-gst-rtsp-server-1.0
    python3-gi
    gstreamer1.0-plugins-base
    gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad  # jpegparse
    gstreamer1.0-plugins-ugly
    gstreamer1.0-libav
    # MQTT broker that tests/test_bridge.py starts on a free loopback port with its own config
    # (Debian also enables its mosquitto service, listening on localhost:1883 only)
    mosquitto
    # `systemd-analyze verify` for the unit tests (tests/test_service_units.py); nothing is started
    systemd
    # Plate fonts (see shared/FINDINGS.md, Fonts)
    fonts-opendin
    fonts-bebas-neue
    fonts-roboto-unhinted
    fonts-liberation
    fonts-urw-base35
    fonts-dejavu-extra
    fonts-open-sans
    fonts-clear-sans
    fonts-b612
    fonts-croscore
    fonts-freefont-ttf
    fonts-dejavu-core
    fonts-league-spartan
    fonts-allerta
    fonts-jetbrains-mono
)

fail() {
    echo "install_system_deps.sh: $*" >&2
    exit 1
}

command -v dpkg-query >/dev/null 2>&1 || fail "dpkg-query not found: this script needs a Debian-based system"

missing=()
for package in "${packages[@]}"; do
    # "install ok installed" is the only status that means the package is fully usable
    status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$package")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install_system_deps.sh: all ${#packages[@]} packages already installed"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || fail "apt-get not found; install manually: ${missing[*]}"

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || fail "not root and sudo not found; run as root to install: ${missing[*]}"
    sudo_cmd=(sudo)
fi

echo "install_system_deps.sh: installing ${missing[*]}"
# env, not export: sudo resets the environment, and a debconf prompt would wait unseen
apt_env=(env DEBIAN_FRONTEND=noninteractive)
"${sudo_cmd[@]}" "${apt_env[@]}" apt-get update -qq >/dev/null || fail "apt-get update failed"
"${sudo_cmd[@]}" "${apt_env[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || fail "apt-get install failed for: ${missing[*]}"
echo "install_system_deps.sh: done"
