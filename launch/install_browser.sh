#!/usr/bin/env bash
# Install headless Chromium and chromedriver from the distribution's packages (Debian: chromium,
# chromium-driver), for tests/test_human_html.py, which drives the human annotation page
# (rlhf/eval/human.py -> annotation.html) in a real browser. Idempotent: does nothing when both binaries exist.
# Usage: bash launch/install_browser.sh   (as root, or a user with sudo)
set -euo pipefail
CHROMIUM_BIN=${CHROMIUM_BIN:-/usr/bin/chromium}
CHROMEDRIVER_BIN=${CHROMEDRIVER_BIN:-/usr/bin/chromedriver}
if [ -x "$CHROMIUM_BIN" ] && [ -x "$CHROMEDRIVER_BIN" ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "install_browser.sh: installing chromium and chromium-driver with apt-get"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
if [ ! -x "$CHROMIUM_BIN" ] || [ ! -x "$CHROMEDRIVER_BIN" ]; then
  echo "install_browser.sh: apt-get finished but $CHROMIUM_BIN or $CHROMEDRIVER_BIN is missing" >&2
  exit 1
fi
