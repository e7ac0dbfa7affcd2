"""Two JAX processes on 127.0.0.1 run the sharded round (keyboard_fl.fl.multiprocess).

Each case starts two real worker processes (``jax.distributed.initialize``,
gloo CPU collectives, one CPU device each, so the round's mesh spans both
processes). They must agree bit for bit with each other and, up to float
rounding, with the same rounds on one device in this process. Then one
worker is SIGKILLed while both are in collectives, and the survivor must
exit on its own, quickly, with a one-line error and status EXIT_PEER_LOST,
rather than hang. Killing process 0 also takes down the coordination service.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from keyboard_fl.fl.multiprocess import EXIT_PEER_LOST, ProcessGroup, run_check, spawn, watch

ROUNDS = 3
# JAX's default. A peer killed inside a collective is noticed at once (gloo); shorter timeouts
# stopped healthy but CPU-starved workers here (5 s at load ~38, 30 s at load ~50).
HEARTBEAT_S = 100
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def one_process():
    return run_check(ROUNDS, 0, devices=1)  # the unsharded round, in this process


def _wait_for(paths, procs, timeout):
    end = time.monotonic() + timeout
    while not all(os.path.exists(p) for p in paths):
        dead = [p.returncode for p in procs if p.poll() is not None]
        assert not dead, f"a worker exited early: {dead}"
        assert time.monotonic() < end, "workers did not finish their rounds"
        time.sleep(0.2)
    time.sleep(0.5)  # let the writes finish; the workers are now in drill rounds (collectives)


@pytest.mark.parametrize("victim", [1, 0])
def test_two_processes_equal_one_and_survive_a_killed_peer(tmp_path, one_process, victim):
    argv = ["-m", "keyboard_fl.fl.multiprocess", "--worker", "--rounds", str(ROUNDS), "--out", str(tmp_path)]
    argv += ["--heartbeat-timeout", str(HEARTBEAT_S), "--drill-seconds", "120"]
    env = {"KEYBOARD_FL_HOST_DEVICES": "1", "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "log.txt", "w") as logf:  # both workers' output
        procs = spawn(argv, 2, env=env, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT)
    try:
        _wait_for(
            [tmp_path / f"process-{i}.json" for i in range(2)], procs, timeout=900
        )  # generous: a loaded 2-core machine took > 240 s
        outs = [json.loads((tmp_path / f"process-{i}.json").read_text()) for i in range(2)]
        os.kill(procs[victim].pid, signal.SIGKILL)
        t_kill = time.monotonic()
        survivor = procs[1 - victim]
        survivor.wait(timeout=HEARTBEAT_S + 120)  # never hangs; the watchdog below is only a backstop
        exit_s = time.monotonic() - t_kill
    finally:
        codes = watch(procs, grace=0)
    log = (tmp_path / "log.txt").read_text(errors="replace")
    print(f"victim {victim}: exit codes {codes}, survivor exited {exit_s:.1f} s after the kill")

    # The round really spanned two processes, one device each, and they agree exactly.
    assert [(o["process"], o["processes"], o["devices"], o["local_devices"]) for o in outs] == [
        (0, 2, 2, 1),
        (1, 2, 2, 1),
    ]
    assert outs[0]["sha256"] == outs[1]["sha256"]
    # Same rounds as one process on one device, up to float summation order.
    np.testing.assert_allclose(outs[0]["params"], one_process["params"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outs[0]["train_loss"], one_process["train_loss"], rtol=1e-5)
    print(
        f"victim {victim}: max |params diff| vs one process "
        f"{np.abs(np.subtract(outs[0]['params'], one_process['params'])).max():.3g}; survivor exited after "
        f"{exit_s:.1f} s with {codes[1 - victim]}"
    )

    # The survivor stopped by itself with a clear error.
    assert codes[victim] == -signal.SIGKILL
    assert codes[1 - victim] != 0
    if codes[1 - victim] == EXIT_PEER_LOST:
        assert f"process {1 - victim} of 2: a collective failed, a peer process is gone" in log
    else:  # not in a collective when the peer died: the coordination service stopped it after missed heartbeats
        assert "Terminating process because the JAX distributed service detected fatal errors" in log


def test_process_group_from_env_names_what_is_missing():
    assert ProcessGroup.from_env({}) is None
    g = ProcessGroup("127.0.0.1:1234", 2, 1)
    assert ProcessGroup.from_env(g.to_env()) == g
    with pytest.raises(ValueError, match=r"KEYBOARD_FL_PROCESS_ID is not an integer"):
        ProcessGroup.from_env({"KEYBOARD_FL_COORDINATOR": "h:1", "KEYBOARD_FL_NUM_PROCESSES": "2"})
    with pytest.raises(ValueError, match=r"process_id 2 not in 0..1"):
        ProcessGroup("h:1", 2, 2)
