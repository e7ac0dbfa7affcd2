"""Real federated clients with Flower 1.42 (``pip install keyboard-fl[flower]``).

* :mod:`keyboard_fl.flower.client_app`: the ``ClientApp`` (one SuperNode = one
  user's device): local training with our client update, clipping on the device.
* :mod:`keyboard_fl.flower.strategy`: :class:`DpFedAvg`, a Flower strategy doing
  Poisson sampling, server-side Gaussian noise, our optax server optimizer and
  the dp-accounting ledger.
* :mod:`keyboard_fl.flower.server_app`: the ``ServerApp`` wiring it together.
* :mod:`keyboard_fl.flower.secagg` / :mod:`keyboard_fl.flower.secagg_server`: SecAgg+
  (``secagg = true``): devices quantize and mask, the server sees only the sum.
* :mod:`keyboard_fl.flower.traffic`: bytes per device on the wire.
* :mod:`keyboard_fl.flower.task`: settings, model and wire format shared by both.
* :mod:`keyboard_fl.flower.loopback`: a SuperLink and N SuperNodes on 127.0.0.1
  (Flower's deployment engine), started, run and torn down from Python.
* ``keyboard_fl/flower/app/pyproject.toml``: the Flower App project (run config).

Submodules are imported on demand: ``import keyboard_fl.flower`` needs no flwr.
"""

from keyboard_fl.package_data import package_dir

APP_DIR = package_dir("keyboard_fl.flower", "app")  # the Flower App project directory (flwr run APP_DIR ...)

__all__ = ["APP_DIR"]
