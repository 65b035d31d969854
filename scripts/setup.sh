#!/usr/bin/env bash
# Create ./.venv (or reuse it) and install omnivec with the tested pins of constraints.txt.
# Re-running is cheap: nothing is installed unless pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "omnivec needs Python >= 3.11; set PYTHON=/path/to/python3.11 (found: $("$PY" --version 2>&1))" >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv

want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
stamp=.venv/.omnivec-installed
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing omnivec and its dependencies into .venv (torch is large: first time takes minutes)..." >&2
  log=$(mktemp)
  if ! .venv/bin/python -m pip install --disable-pip-version-check -c constraints.txt -e '.[dev]' >"$log" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -40 >&2
    echo "pip install failed (full log: $log)" >&2
    exit 1
  fi
  rm -f "$log"
  echo "$want" > "$stamp"
fi
