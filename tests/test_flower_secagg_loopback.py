"""SecAgg+ DP-FedAvg through a real SuperLink and four SuperNodes on 127.0.0.1, one device dropping mid-protocol.

``flower-superlink``, four ``flower-supernode`` processes (one user's corpus each)
and ``flwr run . --run-config "secagg=true"``: every SecAgg+ stage is a real
message to a fresh ``flwr-clientapp`` process. Device 3 has
``--node-config "drop-in-round=1"``: in round 1 it answers the setup and
key-sharing stages, then fails before sending its masked vector; the server
recovers its pairwise masks from the other devices' Shamir shares and unmasks
the sum of the three others. Round 2 runs with all four again.

The test recomputes every device's clipped update in this process (the same
jitted local training from the same released model, key and data), and checks
that what the server released is ``(Σ x̂ + noise)/qN`` with ``Σ x̂`` within the
quantization bound of the plain sum of the survivors' clipped updates, the
noise being the strategy's seeded draw. ε is the plain DP-FedAvg value.
"""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

pytest.importorskip("flwr")

from keyboard_fl import checkpoint  # noqa: E402
from keyboard_fl.data import MaterializedSource  # noqa: E402
from keyboard_fl.fl.round import make_server_optimizer  # noqa: E402
from keyboard_fl.flower.client_app import train_on_device  # noqa: E402
from keyboard_fl.flower.loopback import Loopback, prepare, processes_in_sessions  # noqa: E402
from keyboard_fl.flower.secagg import SecAggParams, clip_for_secagg  # noqa: E402
from keyboard_fl.flower.strategy import DpFedAvg  # noqa: E402
from keyboard_fl.flower.task import FlowerSettings, LocalTask, load_model  # noqa: E402
from keyboard_fl.privacy import PrivacyLedger, default_delta, epsilon  # noqa: E402

pytestmark = pytest.mark.slow

ROUNDS, CLIENTS, DROP = 2, 4, 3
Z, C = 0.3, 0.5  # tiny population: the test checks the protocol and the ledger, not a realistic ε


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def test_secagg_over_real_superlink_survives_a_dropout_and_releases_the_sum(tmp_path):
    prep = prepare(tmp_path, CLIENTS)
    run_dir = tmp_path / "run"
    run_config = {
        **prep.run_config,
        "num-rounds": ROUNDS,
        "clients-per-round": float(CLIENTS),  # q = 1
        "noise-multiplier": Z,
        "clip-norm": C,
        "run-dir": str(run_dir),
        "jax-cache": str(tmp_path / "jax_cache"),
        "round-timeout": 300.0,
        "secagg": True,
        "save-rounds": True,
        "traffic": True,
    }
    lb = Loopback(tmp_path, prep.client_dirs, node_config={DROP: "drop-in-round=1"})
    try:
        lb.start()
        out = lb.run(run_config, timeout=1500)
    finally:
        lb.close()
    assert processes_in_sessions(lb.sessions()) == []

    privacy = json.loads((run_dir / "privacy.json").read_text())
    history = privacy["history"]
    delta = default_delta(CLIENTS)
    assert [h["epsilon"] for h in history] == pytest.approx(
        [epsilon(Z, 1.0, r, delta) for r in range(1, ROUNDS + 1)], rel=1e-12
    )  # ε as without SecAgg
    assert privacy["epsilon"] == pytest.approx(epsilon(Z, 1.0, ROUNDS, delta), rel=1e-12)
    assert out.stdout.count("ε=") >= ROUNDS and "SecAgg+" in out.stdout
    assert [h["sampled_clients"] for h in history] == [CLIENTS, CLIENTS]
    assert [h["keys_shared_clients"] for h in history] == [CLIENTS, CLIENTS]  # the dropout shared its keys first
    assert [h["dropped_after_key_sharing"] for h in history] == [1, 0]
    assert [h["included_clients"] for h in history] == [CLIENTS - 1, CLIENTS]  # recovered; round 2 complete

    # Recompute each device's update in process and compare with what the server released.
    settings = FlowerSettings.from_run_config(run_config)
    tokenizer, _, _, params0 = load_model(settings)
    task = LocalTask.from_settings(settings, tokenizer.vocab_size)
    users = [next(iter(MaterializedSource(d).users("train"))) for d in prep.client_dirs]
    ledger = PrivacyLedger(Z, 1.0, delta, CLIENTS)
    dp = DpFedAvg(params0, make_server_optimizer("sgd", 1.0), ledger, clip_norm=C, seed=settings.seed, node_wait=0)
    d = _flat(params0).size
    secagg = SecAggParams(C, d)
    released = {0: jax.device_get(params0)}
    for r in range(1, ROUNDS + 1):
        released[r], meta = checkpoint.load(run_dir / "rounds", r, params0)
        assert meta["epsilon"] == pytest.approx(history[r - 1]["epsilon"])
    errors = []
    for r in range(1, ROUNDS + 1):
        survivors = [u for i, u in enumerate(users) if not (r == 1 and i == DROP)]
        plain = sum(
            _flat(clip_for_secagg(jax.tree.leaves(train_on_device(settings, task, u, released[r - 1], r)[0]), secagg))
            for u in survivors
        )
        state = dp.state._replace(params=released[r - 1])
        noised, _ = dp._update(state, jax.tree.map(np.zeros_like, released[r - 1]), jax.random.fold_in(dp.noise_key, r))
        noise_sum = (_flat(noised.params) - _flat(released[r - 1])) * CLIENTS  # the seeded N(0, (zC)^2) draw
        got_sum = (_flat(released[r]) - _flat(released[r - 1])) * CLIENTS - noise_sum
        bound = secagg.sum_error_bound(len(survivors))
        fp32 = 2 * CLIENTS * math.sqrt(d) * np.spacing(np.float32(np.abs(_flat(released[r])).max()))  # param rounding
        errors.append(float(np.linalg.norm(got_sum - plain)))
        assert errors[-1] <= bound + fp32, (r, errors[-1], bound, fp32)
        assert np.linalg.norm(plain) > 100 * (bound + fp32)  # the check is not vacuous
    print(f"SecAgg+ sum error per round: {errors} (bound {secagg.sum_error_bound(CLIENTS):.3g})")

    # Bytes per device were counted (the benchmark reports them); the dropped device sent nothing in stage 2.
    traffic = json.loads((run_dir / "traffic.json").read_text())["per_node"]
    assert len(traffic) == CLIENTS and all(v["up"] > 0 and v["down"] > 0 for v in traffic.values())
