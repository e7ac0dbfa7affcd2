"""Tests for keyboard_fl.fl.sharding: the cohort axis of the round split over devices.

The multi-device checks run in a subprocess: ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
must be set before JAX starts, and this process has already imported it.
The child compares, with the same seed and inputs, the round sharded over 4
(fake CPU) devices with the single-device round, and a short federated
training run with ``devices=4`` against ``devices=1``.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from keyboard_fl.config import FederatedConfig
from keyboard_fl.fl import AggregatorConfig, build_round, make_server_optimizer, server_init
from keyboard_fl.fl.sharding import capacity_multiple, check_capacity, client_mesh
from keyboard_fl.testing import toy_cohort, toy_init, toy_loss

RTOL, ATOL = 1e-5, 1e-6

CHILD = textwrap.dedent(
    """
    import dataclasses, json, sys
    import jax, numpy as np
    from keyboard_fl.fl import AggregatorConfig, build_round, make_server_optimizer, server_init
    from keyboard_fl.fl.sharding import client_mesh, replicate, shard_cohort
    from keyboard_fl.testing import toy_cohort, toy_init, toy_loss

    import time
    t0 = time.perf_counter()
    out = {"device_count": jax.device_count()}
    mesh = client_mesh()
    sgd = make_server_optimizer("sgd", 1.0)  # new params = params + (sum + noise) / qN
    C, Z, QN = 0.3, 1.3, 4.0
    aggs = {"dp-fedavg": AggregatorConfig("dp-fedavg", C, Z, QN), "fedavg": AggregatorConfig("fedavg")}
    flat = lambda t: np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(t)])
    params = toy_init(jax.random.key(0))
    cohort = toy_cohort(3, 8, num_real=5, steps=2, batch=4, seq_len=8)
    cohort = cohort._replace(inputs=cohort.inputs.at[2, 0, 0, 0].set(10**6))  # one NaN client, on device 2
    key = jax.random.key(7)
    cases = {}
    for mode, agg in aggs.items():
        for chunk in (None, 1):
            one = build_round(toy_loss, 0.5, sgd, agg, client_chunk=chunk).apply
            many = build_round(toy_loss, 0.5, sgd, agg, client_chunk=chunk, mesh=mesh).apply
            s1, m1 = one(server_init(params, sgd), cohort, key)
            if mode == "dp-fedavg":  # inputs placed on the mesh by the caller
                s4, m4 = many(replicate(server_init(params, sgd), mesh), shard_cohort(cohort, mesh), replicate(key, mesh))
            else:  # host inputs: the round places them
                s4, m4 = many(server_init(params, sgd), cohort, key)
            case = {
                "params_one": flat(s1.params).tolist(), "params_many": flat(s4.params).tolist(),
                "metrics_one": np.array(m1, np.float64).tolist(), "metrics_many": np.array(m4, np.float64).tolist(),
                "out_devices": len(s4.params["w"].sharding.device_set),
                "metric_devices": len(m4.train_loss.sharding.device_set),
                "round": int(s4.round), "nonfinite": int(m4.nonfinite_clients), "cohort_size": int(m4.cohort_size),
            }
            if mode == "dp-fedavg" and chunk is None:
                # The noise alone: the same round without noise, same key.
                quiet = build_round(toy_loss, 0.5, sgd, dataclasses.replace(agg, noise_multiplier=0.0)).apply
                s0, _ = quiet(server_init(params, sgd), cohort, key)
                case["noise_one"] = ((flat(s1.params) - flat(s0.params)) * QN).tolist()
                case["noise_many"] = ((flat(s4.params) - flat(s0.params)) * QN).tolist()
                hlo = many.lower(server_init(params, sgd), cohort, key).as_text()
                case["all_reduce"] = "all_reduce" in hlo and "replica_groups = dense<[[0, 1, 2, 3]]>" in hlo
            cases[f"{mode}/chunk={chunk}"] = case
    out["cases"] = cases
    out["rounds_s"] = time.perf_counter() - t0
    try:  # capacity 6 cannot be split over 4 devices
        many(server_init(params, sgd), toy_cohort(0, 6, steps=2, batch=4, seq_len=8), key)
        out["capacity_error"] = None
    except ValueError as e:
        out["capacity_error"] = str(e)

    # Training: devices=4 against devices=1 (the unsharded round), same seed.
    sys.path.insert(0, "tests")
    from keyboard_fl.models import init_params, make_loss_fn
    from test_train import FED, MODEL, _fed, _user_rows
    graphdef, init = init_params(MODEL, jax.random.key(0))
    setup = (make_loss_fn(graphdef), init, _user_rows(), lambda *a: None)  # no cached round: train_federated builds it
    import tempfile
    runs = {}
    for d in (1, 4):
        cfg = dataclasses.replace(FED, rounds=2, checkpoint_every=2, devices=d)
        with tempfile.TemporaryDirectory() as tmp:
            p, ledger, hist = _fed(setup, tmp, cfg=cfg)
        runs[d] = {"params": flat(p).tolist(), "param_devices": len(jax.tree.leaves(p)[0].sharding.device_set), "train_loss": [h["train_loss"] for h in hist],
                   "cohort": [h["cohort_size"] for h in hist], "eps": ledger.epsilon()}
    out["train"] = runs
    out["total_s"] = time.perf_counter() - t0
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def four_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=root, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


def test_child_saw_four_devices(four_devices):
    assert four_devices["device_count"] == 4
    print(f"child: rounds {four_devices['rounds_s']:.1f} s, all {four_devices['total_s']:.1f} s")


@pytest.mark.parametrize("case", ["dp-fedavg/chunk=None", "dp-fedavg/chunk=1", "fedavg/chunk=None", "fedavg/chunk=1"])
def test_sharded_round_equals_single_device(four_devices, case):
    c = four_devices["cases"][case]
    one, many = np.array(c["params_one"]), np.array(c["params_many"])
    np.testing.assert_allclose(many, one, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(c["metrics_many"], c["metrics_one"], rtol=RTOL, atol=ATOL)
    assert c["out_devices"] == 4 and c["metric_devices"] == 4  # outputs live (replicated) on the 4-device mesh
    assert (c["round"], c["cohort_size"], c["nonfinite"]) == (1, 5, 1)
    print(
        f"{case}: max |params diff| {np.abs(many - one).max():.3g}, "
        f"max |metrics diff| {np.abs(np.subtract(c['metrics_many'], c['metrics_one'])).max():.3g}"
    )


def test_noise_is_drawn_once_not_per_device(four_devices):
    c = four_devices["cases"]["dp-fedavg/chunk=None"]
    one, many = np.array(c["noise_one"]), np.array(c["noise_many"])
    np.testing.assert_allclose(many, one, rtol=1e-4, atol=1e-5)
    assert abs(one.std() / (1.3 * 0.3) - 1) < 0.15  # it is the N(0, (zC)^2) noise
    assert c["all_reduce"]  # the cross-device sum is in the compiled program
    print(f"noise: max |diff| {np.abs(many - one).max():.3g}, std {one.std():.4f} (zC = {1.3 * 0.3:.4f})")


def test_sharded_round_rejects_a_capacity_the_devices_cannot_split(four_devices):
    msg = four_devices["capacity_error"]
    assert msg is not None and "capacity 6 must be a multiple of 4" in msg and "multiple=4" in msg


def test_training_on_four_devices_equals_one(four_devices):
    one, many = four_devices["train"]["1"], four_devices["train"]["4"]
    assert (one["param_devices"], many["param_devices"]) == (1, 4)  # the run really was sharded
    assert one["cohort"] == many["cohort"] and one["eps"] == many["eps"]
    np.testing.assert_allclose(many["train_loss"], one["train_loss"], rtol=RTOL)
    np.testing.assert_allclose(many["params"], one["params"], rtol=RTOL, atol=ATOL)
    print(f"training: max |params diff| {np.abs(np.subtract(many['params'], one['params'])).max():.3g}")


def test_capacity_check_message():
    check_capacity(16, 4, 2)
    check_capacity(12, 4, None)
    assert capacity_multiple(4, 2) == 8 and capacity_multiple(1, 16) == 16
    with pytest.raises(
        ValueError, match=r"capacity 12 must be a multiple of 8 \(4 devices x client_chunk 2\).*multiple=8\) gives 16"
    ):
        check_capacity(12, 4, 2)


def test_mesh_validation():
    mesh = client_mesh()
    assert mesh.axis_names == ("clients",) and mesh.size == jax.device_count()
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count"):
        client_mesh(jax.device_count() + 1)
    with pytest.raises(ValueError, match="devices"):
        FederatedConfig(devices=0)


def test_one_device_mesh_is_the_unsharded_round():
    sgd = make_server_optimizer("sgd", 1.0)
    agg = AggregatorConfig("dp-fedavg", 0.3, 1.3, 4.0)
    args = (
        server_init(toy_init(jax.random.key(0)), sgd),
        toy_cohort(1, 8, num_real=5, steps=2, batch=4, seq_len=8),
        jax.random.key(3),
    )
    plain = build_round(toy_loss, 0.5, sgd, agg).apply.lower(*args).as_text()
    meshed = build_round(toy_loss, 0.5, sgd, agg, mesh=client_mesh(1)).apply.lower(*args).as_text()
    assert meshed == plain  # the same program, so bit-identical results (the resume tests rely on it)
