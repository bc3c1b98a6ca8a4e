#!/usr/bin/env bash
# Install watchdog-core into .venv and run the demo: a throwaway host builds memory
# pressure against a small limit (its status line and each dump told as they come), is
# killed, and the postmortem the watchdog wrote is shown.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/watchdog-core demo "$@"
