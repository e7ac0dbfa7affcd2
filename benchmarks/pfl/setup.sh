#!/usr/bin/env bash
# Builds the isolated pfl-research 0.6 environment that benchmarks/pfl/pfl_round.py
# runs in (default /work/pfl-venv, outside the repo).
#
# pfl 0.6 (Apple's "pfl-research", arXiv 2404.06430) needs dp-accounting < 0.6
# while keyboard_fl uses dp-accounting 0.6, so it gets its own venv. Its PyTorch
# backend runs on the CPU build of torch 2.13.0 (pip takes the local CPU wheel
# when one is on its find-links; otherwise PyPI's torch 2.13.0, a CUDA build
# that also runs on the CPU).
#
# Usage:  bash benchmarks/pfl/setup.sh                     # -> /work/pfl-venv
#         PFL_VENV=/some/dir PYTHON=python3.11 bash benchmarks/pfl/setup.sh
set -euo pipefail
PFL_VENV="${PFL_VENV:-/work/pfl-venv}"
PYTHON="${PYTHON:-python3.11}"
if [ ! -x "$PFL_VENV/bin/python" ]; then
  "$PYTHON" -m venv "$PFL_VENV"
fi
"$PFL_VENV/bin/python" -m pip install --quiet --upgrade pip
"$PFL_VENV/bin/python" -m pip install --quiet "torch==2.13.0" "pfl[pytorch]==0.6.0" "dp-accounting<0.6" psutil
"$PFL_VENV/bin/python" - <<'PY'
import importlib.metadata as md
import torch
import pfl
from pfl.privacy import GaussianMechanism  # noqa: F401
from pfl.model.pytorch import PyTorchModel  # noqa: F401
from pfl.algorithm import FederatedAveraging  # noqa: F401
print("pfl", md.version("pfl"), "torch", torch.__version__, "dp-accounting", md.version("dp-accounting"))
PY
