#!/usr/bin/env bash
# The test command: install the project with everything its tests need, then run them.
#   python3 -m venv .venv && . .venv/bin/activate && bash scripts/test.sh [pytest options]
# Installs: the package in editable mode with its [test] extra (pytest, hypothesis, Playwright,
# transformers, ...), and Debian's Chromium for the browser test when /usr/bin/chromium is missing
# (Playwright never downloads a browser of its own). Needs root or sudo for that one apt step.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m pip install -q -e '.[test]'
if [ ! -x /usr/bin/chromium ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi
python3 -m pytest "$@"
