#!/usr/bin/env bash
# Set up (if needed), then run the test suite and the linter.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
