"""Every core by default, the same results on any machine: a fixed number of XLA host devices.

XLA's CPU client shows one device unless told otherwise
(``--xla_force_host_platform_device_count``). One device runs a round's
small per-client matmuls on few threads, so most cores idle; one device per
core would use them, but the cohort's split over devices (and with it each
device's float summation order) would then follow the machine's core count.

So the package asks for a *fixed* number of host devices, ``HOST_DEVICES``,
whatever the core count: the round shards its cohort over them
(:mod:`keyboard_fl.fl.sharding`), XLA runs them on however many cores there
are, and the same seed gives bit-identical results on 1, 2 or 16 cores
(``tests/test_fl_host_devices.py`` checks it with ``taskset`` and with
Eigen's intra-op threads on and off). The flag must be in ``XLA_FLAGS`` before JAX starts its CPU
backend (the first computation or ``jax.devices()``, not ``import jax``):
``import keyboard_fl`` sets it, so entry points, benchmarks, tests and
notebooks that import the package before computing anything get it. A
process that computed with JAX first keeps its one device; the round then
warns (:func:`keyboard_fl.fl.sharding.client_mesh`) that its results differ
from the default by float rounding.

This module imports nothing from JAX.
"""

from __future__ import annotations

import os
import re
import sys

__all__ = ["ENV", "HOST_DEVICES", "configure_host_devices", "host_device_count"]

# 2 devices: the machine the project targets has 2 cores. Measured there
# (benchmarks/results/devices.json, fl_round_grid.json): 2 devices make a round
# ~2x faster than 1 on a quiet machine and still win at load ~9, while 4 are
# ~8% slower than 2 quiet and lose to 1 under load, 8 twice slower than 1 at
# load ~20. More cores: set KEYBOARD_FL_HOST_DEVICES (results then change by
# float rounding, identically on every machine with that setting).
HOST_DEVICES = 2
# Overrides HOST_DEVICES (an int >= 1), e.g. KEYBOARD_FL_HOST_DEVICES=1 for one device.
ENV = "KEYBOARD_FL_HOST_DEVICES"
FLAG = "--xla_force_host_platform_device_count"


def host_device_count() -> int:
    """The host device count asked for: ``$KEYBOARD_FL_HOST_DEVICES`` or :data:`HOST_DEVICES`."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return HOST_DEVICES
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"${ENV} must be a positive integer (host devices), got {raw!r}")
    return int(raw)


def flag_in_effect(xla_flags: str | None = None) -> int | None:
    """The device count that ``XLA_FLAGS`` (default: the environment's) asks for, or None."""
    flags = os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags
    found = re.findall(re.escape(FLAG) + r"=(\d+)", flags)
    return int(found[-1]) if found else None


def _backend_started() -> bool:
    xb = sys.modules.get("jax._src.xla_bridge")
    return bool(xb is not None and getattr(xb, "_backends", None))


def configure_host_devices(n: int | None = None) -> bool:
    """Adds ``--xla_force_host_platform_device_count=n`` to ``XLA_FLAGS`` (n default:
    :func:`host_device_count`) unless a count is already there, which wins.

    Returns False when JAX's backend has already started (too late to change
    the device count), True otherwise.
    """
    if flag_in_effect() is not None:
        return True
    if _backend_started():
        return False
    n = host_device_count() if n is None else n
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" {FLAG}={n}").strip()
    return True
