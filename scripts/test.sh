#!/usr/bin/env bash
# Create or reuse ./.venv and run the whole test suite (offline; tiny models built by the tests).
# Extra arguments go to pytest (e.g. -k flow, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
