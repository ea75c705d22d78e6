#!/usr/bin/env bash
# Create (or refresh) the virtual environment at .venv and install rlcontrol into it.
# Usage: scripts/setup.sh [extras]   e.g. scripts/setup.sh dev   or   scripts/setup.sh dev,bench
# Idempotent: a second run with the same extras and an unchanged pyproject.toml returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=".venv/.rlcontrol-installed-${extras:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # torch first and exactly pinned: the local CPU wheel, never a CUDA build pulled by a range.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  spec="."
  [ -n "$extras" ] && spec=".[${extras}]"
  .venv/bin/python -m pip install -q -e "$spec"
  touch "$stamp"
fi
