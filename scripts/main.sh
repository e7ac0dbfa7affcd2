#!/usr/bin/env bash
# The main job: simulated population → public tokenizer → central baseline,
# FedAvg and DP-FedAvg models side by side, written to runs/main/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/keyboard-fl main "$@"
