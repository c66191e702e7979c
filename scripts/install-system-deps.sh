#!/bin/sh
# System packages the test suite uses when present: Mosquitto (a real broker for the external
# broker tests), Chromium (the dashboard's browser tests). Installs only what is missing; safe to run again.
set -eu
need=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need="$need mosquitto"
# Headless Chromium and its driver for the dashboard's browser tests, a font that renders Urdu.
[ -x /usr/bin/chromium ] || need="$need chromium"
[ -x /usr/bin/chromedriver ] || need="$need chromium-driver"
[ -f /usr/share/fonts/truetype/noto/NotoNastaliqUrdu-Regular.ttf ] || need="$need fonts-noto-core"
[ -z "$need" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "please install:$need" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need
# The package may start a system broker on port 1883; tests start their own on free ports.
