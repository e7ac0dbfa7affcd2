#!/usr/bin/env bash
# Create .venv (Python ≥ 3.11) and install keyboard_fl with its test extras; bring
# onnxruntime-web (npm registry) for the demo's on-device mode (scripts/fetch_ort.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.keyboard_fl-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[test]'
  touch "$stamp"
fi
if ! bash scripts/fetch_ort.sh; then
  echo "warning: onnxruntime-web could not be fetched (needs npm); the demo page runs in server mode only" >&2
fi
