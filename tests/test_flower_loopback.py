"""DP-FedAvg through Flower's deployment engine: a real SuperLink and SuperNode processes on 127.0.0.1.

Not the simulation engine: ``flower-superlink``, three ``flower-supernode``
processes (one user's corpus each) and ``flwr run`` talk HTTP over loopback,
and every message runs the ClientApp in a fresh ``flwr-clientapp`` process.
The test checks that the model improves on a fixed held-out set, that ε is
reported every round and equals our accountant's value for the same
(z, q, rounds, δ), that devices clipped before replying, and that teardown
leaves no process behind.
"""

from __future__ import annotations

import json
import socket

import pytest

pytest.importorskip("flwr")

from keyboard_fl.flower.loopback import Loopback, prepare, processes_in_sessions  # noqa: E402
from keyboard_fl.privacy import default_delta, epsilon  # noqa: E402

pytestmark = pytest.mark.slow

ROUNDS = 3
CLIENTS = 3
Z = 0.3  # tiny population: any useful z would swamp 3 users' signal; this test checks the plumbing and the ledger
C = 0.5


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_dp_fedavg_over_real_flower_superlink_and_supernodes(tmp_path):
    prep = prepare(tmp_path, CLIENTS)
    run_dir = tmp_path / "run"
    run_config = {
        **prep.run_config,
        "num-rounds": ROUNDS,
        "clients-per-round": float(CLIENTS),  # q = 1: every device every round
        "noise-multiplier": Z,
        "clip-norm": C,
        "run-dir": str(run_dir),
        "jax-cache": str(tmp_path / "jax_cache"),
        "round-timeout": 300.0,
    }
    lb = Loopback(tmp_path, prep.client_dirs)
    try:
        lb.start()
        assert len(lb.procs) == 1 + CLIENTS
        out = lb.run(run_config, timeout=480)
    finally:
        lb.close()

    # Everything started is gone, and the SuperLink's port is free again.
    assert processes_in_sessions(lb.sessions()) == []
    assert all(p.poll() is not None for p in lb.procs)
    assert not _listening(lb.port)

    result = json.loads((run_dir / "result.json").read_text())
    losses = {int(r): v for r, v in result["eval_loss"].items()}
    assert sorted(losses) == list(range(ROUNDS + 1))
    assert losses[ROUNDS] < losses[0], losses  # the global model improved on the fixed held-out set

    delta = default_delta(CLIENTS)
    privacy = json.loads((run_dir / "privacy.json").read_text())
    assert privacy["sampling"] == "poisson" and privacy["accountant"] == "pld"
    assert privacy["privacy_unit"] == "user" and privacy["rounds"] == ROUNDS
    assert privacy["epsilon"] == pytest.approx(epsilon(Z, 1.0, ROUNDS, delta), rel=1e-12)
    history = privacy["history"]
    assert [h["epsilon"] for h in history] == pytest.approx(
        [epsilon(Z, 1.0, r, delta) for r in range(1, ROUNDS + 1)], rel=1e-12
    )
    for h in history:
        assert h["sampled_clients"] == h["included_clients"] == CLIENTS  # q = 1, nobody failed
        assert 0 < h["reply_norm_max"] <= C * (1 + 1e-5)  # deltas arrived already clipped by the devices
        assert h["noise_std"] == pytest.approx(Z * C) and h["noise_std_average"] == pytest.approx(Z * C / CLIENTS)
    assert "ε=" in out.stdout  # reported in the streamed ServerApp log each round
    assert out.stdout.count("ε=") >= ROUNDS

    # ε is stored with the model.
    meta = json.loads(next((run_dir / "model").glob("ckpt-*.json")).read_text())
    assert meta["meta"]["privacy"]["epsilon"] == pytest.approx(privacy["epsilon"])
