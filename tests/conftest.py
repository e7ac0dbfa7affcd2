"""Shared pytest fixtures.

``tiny_runs``: the three tiny trained runs (central, FedAvg, DP-FedAvg), trained
once per test session (~30 s each on 2 cores). Set ``KEYBOARD_FL_TINY_RUNS`` to a
directory holding finished ``central/``, ``fedavg/`` and ``dp-fedavg/`` runs to
reuse them instead (e.g. after ``keyboard-fl train --preset tiny --out DIR/<mode>``).

``canary_run``: a tiny central run with two planted canaries, audited (~12 s);
reused from ``$KEYBOARD_FL_TINY_RUNS/central-canaries`` when that is a finished run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from keyboard_fl.runs import MODES as TINY_MODES
from keyboard_fl.runs import is_finished


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    """``{"central": dir, "fedavg": dir, "dp-fedavg": dir}`` of finished tiny runs."""
    reuse = os.environ.get("KEYBOARD_FL_TINY_RUNS")
    if reuse:
        dirs = {m: Path(reuse) / m for m in TINY_MODES}
        if all(is_finished(d) for d in dirs.values()):
            return dirs
    from keyboard_fl.config import preset
    from keyboard_fl.train.run import run

    root = tmp_path_factory.mktemp("tiny_runs")
    dirs = {}
    for mode in TINY_MODES:
        out = root / mode
        run(preset("tiny", mode=mode), out, log=lambda s: None)
        dirs[mode] = out
    return dirs


@pytest.fixture(scope="session")
def canary_run(tmp_path_factory) -> Path:
    """A finished, audited tiny central run trained with canaries typed 400 times and once."""
    reuse = os.environ.get("KEYBOARD_FL_TINY_RUNS")
    if reuse and is_finished(Path(reuse) / "central-canaries"):
        return Path(reuse) / "central-canaries"
    import dataclasses

    from keyboard_fl.audit import audit_run
    from keyboard_fl.config import preset
    from keyboard_fl.privacy.canaries import CanaryConfig
    from keyboard_fl.train.run import run

    out = tmp_path_factory.mktemp("canary_run") / "central-canaries"
    canaries = CanaryConfig(num_canaries=2, repetitions=(400, 1), references=1000)
    run(dataclasses.replace(preset("tiny", mode="central"), canaries=canaries), out, log=lambda s: None)
    audit_run(out)
    return out


@pytest.fixture(scope="module")
def compiled_round():
    """``compiled_round(loss_fn, cfg, dp, private, population)``: one prebuilt federated
    round per configuration within a test module, to pass as ``train_federated(fl_round=...)``
    (compiling the round dominates these modules' runtime otherwise)."""
    from keyboard_fl.train.federated import make_round

    cache = {}

    def get(loss_fn, cfg, dp, private, population):
        key = (
            loss_fn,
            cfg.client_lr,
            cfg.server_optimizer,
            cfg.server_lr,
            cfg.client_chunk,
            cfg.devices,
            dp,
            private,
            population,
        )
        if key not in cache:
            cache[key] = make_round(loss_fn, cfg, dp, private=private, population=population)
        return cache[key]

    return get
