#!/usr/bin/env bash
# Builds the isolated TensorFlow Federated 0.87.0 environment used by
# tools/tff_crosscheck/crosscheck.py (see shared/DESIGN.md §6).
#
# TFF 0.87.0 (its last release) pins jax/jaxlib 0.4.14, tensorflow 2.14,
# numpy 1.25 and Python < 3.12. jaxlib 0.4.14 was never published, so a plain
# `pip install tensorflow-federated==0.87.0` fails. We therefore install TFF's
# wheel with --no-deps and its requirements ourselves, pinned, with
# jaxlib 0.4.13 instead of 0.4.14. The environment lives OUTSIDE the repo and
# never shares anything with keyboard_fl's own venv (current jax/flax).
#
# Usage:  bash tools/tff_crosscheck/setup.sh            # -> /tmp/tff-venv
#         TFF_VENV=/some/dir PYTHON=python3.11 bash tools/tff_crosscheck/setup.sh
set -euo pipefail

TFF_VENV="${TFF_VENV:-/tmp/tff-venv}"
PYTHON="${PYTHON:-python3.11}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

"$PYTHON" - <<'PY'
import sys
if not ((3, 9) <= sys.version_info[:2] < (3, 12)):
    sys.exit(f"TFF 0.87.0 needs Python >=3.9,<3.12; got {sys.version.split()[0]} (set PYTHON=)")
PY

if [ ! -x "$TFF_VENV/bin/python" ]; then
  "$PYTHON" -m venv "$TFF_VENV"
fi
PIP=("$TFF_VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade "pip==24.0" "setuptools==69.5.1" "wheel==0.43.0"

# 1) TFF's own requirements (from the 0.87.0 wheel's METADATA), pinned exactly,
#    with jaxlib 0.4.13 in place of the unpublished 0.4.14. If the fully
#    resolved lock file exists, install exactly that (reproducible); it was
#    produced by `pip freeze` after a successful run of this script.
if [ -f "$HERE/requirements-tff.lock" ] && [ "${TFF_NO_LOCK:-0}" != "1" ]; then
  "${PIP[@]}" install -r "$HERE/requirements-tff.lock"
else
  "${PIP[@]}" install -r "$HERE/requirements-tff.txt"
fi

# 2) TFF itself, without letting pip resolve its (unsatisfiable) pins.
"${PIP[@]}" install --no-deps "tensorflow-federated==0.87.0"

# 3) Smoke test: TFF imports and runs a trivial federated computation.
"$TFF_VENV/bin/python" - <<'PY'
import numpy as np, jax, jaxlib, tensorflow as tf, tensorflow_federated as tff
print("python", __import__("sys").version.split()[0], "| tff", tff.__version__, "| tf", tf.__version__,
      "| numpy", np.__version__, "| jax", jax.__version__, "| jaxlib", jaxlib.__version__)
print("tff.tensorflow.computation smoke:", tff.tensorflow.computation(lambda: tf.constant(1.0))())
# TFF's C++ context leaves its worker_binary children running: end ours.
import psutil
for child in psutil.Process().children(recursive=True):
    if "worker_binary" in " ".join(child.cmdline()):
        child.terminate()
PY
echo "TFF venv ready: $TFF_VENV"
