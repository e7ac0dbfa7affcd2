#!/usr/bin/env bash
# Builds the isolated TensorFlow Federated 0.87.0 environment that
# benchmarks/tff/tff_round.py runs in (default /tmp/tff-venv, outside the repo).
#
# TFF 0.87.0 pins jax/jaxlib 0.4.14 (jaxlib 0.4.14 was never published),
# tensorflow 2.14, numpy 1.25 and Python < 3.12, so it cannot share a venv with
# keyboard_fl (jax 0.10 / flax 0.12) and a plain `pip install` fails. The
# recipe (TFF's wheel with --no-deps, its requirements pinned from a lock file,
# jaxlib 0.4.13) lives in tools/tff_crosscheck/setup.sh; this script runs it
# and then checks what the benchmark needs (Keras RNN layers, the DP factory).
#
# Usage:  bash benchmarks/tff/setup.sh                 # -> /tmp/tff-venv
#         TFF_VENV=/some/dir PYTHON=python3.11 bash benchmarks/tff/setup.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export TFF_VENV="${TFF_VENV:-/tmp/tff-venv}"
bash "$HERE/../../tools/tff_crosscheck/setup.sh"
TF_CPP_MIN_LOG_LEVEL=2 "$TFF_VENV/bin/python" - <<'PY'
import tensorflow as tf, tensorflow_federated as tff
assert tff.__version__ == "0.87.0", tff.__version__
tf.keras.layers.RNN, tf.keras.layers.LSTM
tff.learning.algorithms.build_unweighted_fed_avg
tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed
print("benchmark imports ok: tff", tff.__version__, "tf", tf.__version__)
PY
