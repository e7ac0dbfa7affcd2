"""Every core by default, results independent of the core count (keyboard_fl/hostdevices.py).

Each check runs a short federated training in a subprocess (the device count
is fixed when JAX starts): the default round, sharded over the package's
fixed number of host devices, must give bit-identical parameters and metrics
on one core and on two (``taskset``) and under other XLA CPU threading flags.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from keyboard_fl.hostdevices import ENV, FLAG, HOST_DEVICES, configure_host_devices, flag_in_effect, host_device_count

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = textwrap.dedent(
    """
    import dataclasses, hashlib, json, os, sys, tempfile
    sys.path.insert(0, "tests")
    import keyboard_fl  # sets the host device count before JAX starts
    import jax, numpy as np
    from keyboard_fl.models import ModelConfig, init_params, make_loss_fn
    from test_train import DP, FED, _user_rows
    from keyboard_fl.train.federated import train_federated

    # Big enough that XLA would split its matmuls over threads.
    graphdef, params = init_params(ModelConfig(vocab_size=512, embed_dim=32, hidden_dim=128), jax.random.key(0))
    rows = _user_rows()
    cfg = dataclasses.replace(FED, rounds=2, checkpoint_every=2, client_chunk=2)
    with tempfile.TemporaryDirectory() as tmp:
        p, _, hist = train_federated(make_loss_fn(graphdef), params, rows, cfg, DP, private=True, seed=0, ckpt_dir=tmp,
                                     resume=False)
    h = hashlib.sha256()
    for x in jax.tree.leaves(p):
        h.update(np.asarray(x).tobytes())
    out = {"devices": jax.device_count(), "param_devices": len(jax.tree.leaves(p)[0].sharding.device_set),
           "cores": len(os.sched_getaffinity(0)), "params_sha256": h.hexdigest(),
           "metrics": [{k: v for k, v in r.items() if k != "seconds"} for r in hist]}
    print("RESULT" + json.dumps(out))
    """
)

VARIANTS = {  # name: (cores for taskset or None, extra XLA_FLAGS)
    "one core": ("0", ""),
    "two cores": ("0,1", ""),
    "no eigen threads": (None, "--xla_cpu_multi_thread_eigen=false"),
    "eigen threads": (None, "--xla_cpu_multi_thread_eigen=true"),
}


def _run(cores, flags):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", ENV)}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
    cmd = [sys.executable, "-c", CHILD]
    if cores is not None:
        cmd = [shutil.which("taskset"), "-c", cores] + cmd
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("RESULT")][-1][len("RESULT") :])


@pytest.fixture(scope="module")
def runs():
    if shutil.which("taskset") is None or len(os.sched_getaffinity(0)) < 2 or not {0, 1} <= os.sched_getaffinity(0):
        pytest.skip("needs taskset and cores 0 and 1")
    return {name: _run(*v) for name, v in VARIANTS.items()}


def test_default_round_is_sharded_over_the_fixed_device_count(runs):
    for name, r in runs.items():
        assert (r["devices"], r["param_devices"]) == (HOST_DEVICES, HOST_DEVICES), name
    assert runs["one core"]["cores"] == 1 and runs["two cores"]["cores"] == 2


def test_results_do_not_depend_on_cores_or_threading_flags(runs):
    ref = runs["two cores"]
    for name, r in runs.items():
        assert r["params_sha256"] == ref["params_sha256"], f"{name}: parameters differ from two cores"
        assert r["metrics"] == ref["metrics"], f"{name}: metrics differ from two cores"
    assert ref["metrics"][-1]["cohort_size"] > 0


def test_configure_respects_an_explicit_count_and_env(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"--foo {FLAG}=3")
    assert configure_host_devices() and flag_in_effect() == 3  # an explicit count wins
    assert flag_in_effect(f"{FLAG}=2 {FLAG}=5") == 5 and flag_in_effect("--bar") is None
    monkeypatch.setenv(ENV, "4")
    assert host_device_count() == 4
    monkeypatch.setenv(ENV, "zero")
    with pytest.raises(ValueError, match=ENV):
        host_device_count()


def test_this_process_has_the_fixed_devices():
    import jax

    if flag_in_effect() == HOST_DEVICES:
        assert jax.device_count() == HOST_DEVICES
