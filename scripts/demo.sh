#!/usr/bin/env bash
# One command from a fresh clone: install, build a sample corpus, ingest it through the Prefect
# flow, and print one search. Extra arguments go to `omnivec demo` (e.g. --query "a blue square").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/omnivec demo "$@"
