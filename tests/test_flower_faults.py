"""Faults in the Flower deployment: real SuperLink and SuperNode processes on 127.0.0.1.

* A SuperNode is SIGKILLed while its ClientApp trains in round 1. The round
  completes with the other devices (the SuperLink answers for the dead node
  with an error once it misses its heartbeats), and the privacy ledger still
  steps once per round with the same q: ε is what the accountant gives for
  (z, q, rounds, δ), whoever replied.
* The SuperLink, started with ``--database``, is SIGKILLed after round 1 and
  restarted on the same port. The SuperNodes reconnect by themselves (same
  processes). The ServerApp in flight dies with it and Flower marks that run
  failed; ``flwr run`` with ``resume = true`` continues from the strategy's
  round checkpoint to the end, each round's ε charged once.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from keyboard_fl.flower.loopback import Loopback, prepare, processes_in_sessions  # noqa: E402
from keyboard_fl.privacy import default_delta, epsilon  # noqa: E402

pytestmark = pytest.mark.slow

CLIENTS = 3
ROUNDS = 2
Z, C = 0.3, 0.5
ROOT = Path(__file__).resolve().parents[1]


def _config(prep, tmp_path, **extra):
    return {
        **prep.run_config,
        "num-rounds": ROUNDS,
        "clients-per-round": float(CLIENTS),  # q = 1: every device is sampled every round
        "noise-multiplier": Z,
        "clip-norm": C,
        "run-dir": str(tmp_path / "run"),
        "jax-cache": str(tmp_path / "jax_cache"),
        "round-timeout": 400.0,  # far longer than Flower's node heartbeat patience (2 x 30 s)
        "eval-messages": 50,
        **extra,
    }


def _loopback(tmp_path, prep, **kw) -> Loopback:
    return Loopback(tmp_path, prep.client_dirs, env={"PYTHONPATH": str(ROOT)}, **kw)  # this checkout's code


def _in_background(lb: Loopback, cfg: dict) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def go():
        try:
            out["result"] = lb.run(cfg, timeout=900)
        except Exception as e:  # noqa: BLE001 - reported by the test
            out["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, out


def _wait(cond, timeout: float, what: str, poll: float = 0.2):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(poll)


def _clientapp_running(session: int) -> bool:
    """A live ``flwr-clientapp`` process (one runs per message) in the SuperNode's session."""
    for pid in processes_in_sessions({session}):
        try:
            if b"flwr-clientapp" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def _rounds_done(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "privacy.json").read_text())["rounds"]
    except (OSError, ValueError, KeyError):
        return 0


def _check_ledger(run_dir: Path) -> list[dict]:
    privacy = json.loads((run_dir / "privacy.json").read_text())
    delta = default_delta(CLIENTS)
    assert privacy["rounds"] == ROUNDS and privacy["sampling"] == "poisson"
    assert privacy["epsilon"] == pytest.approx(epsilon(Z, 1.0, ROUNDS, delta), rel=1e-12)
    history = privacy["history"]
    assert [h["round"] for h in history] == list(range(1, ROUNDS + 1))  # each round once
    assert [h["epsilon"] for h in history] == pytest.approx(
        [epsilon(Z, 1.0, r, delta) for r in range(1, ROUNDS + 1)], rel=1e-12
    )
    return history


def test_supernode_killed_mid_round(tmp_path):
    prep = prepare(tmp_path, CLIENTS)
    lb = _loopback(tmp_path, prep)
    try:
        lb.start()
        t, out = _in_background(lb, _config(prep, tmp_path))
        victim = lb.supernode(0)
        # Mid-round: the victim's ClientApp process (a child in its session) is training round 1.
        _wait(lambda: _clientapp_running(victim.pid) or "error" in out, 600, "a ClientApp on node 0")
        assert _rounds_done(tmp_path / "run") == 0
        os.killpg(victim.pid, signal.SIGKILL)
        t_kill = time.monotonic()
        t.join(timeout=900)
        assert "result" in out, out.get("error")
        print(f"run finished {time.monotonic() - t_kill:.0f} s after the SuperNode was killed")
    finally:
        lb.close()
    history = _check_ledger(tmp_path / "run")
    first = history[0]
    assert first["sampled_clients"] == CLIENTS  # the dead device was sampled ...
    assert first["included_clients"] == CLIENTS - 1 and first["failed_clients"] == 1  # ... and did not reply
    for h in history[1:]:  # a dead node is either no longer listed or sampled and failed
        assert h["included_clients"] == CLIENTS - 1
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert sorted(int(r) for r in result["eval_loss"]) == list(range(ROUNDS + 1))


def test_superlink_restart_with_database_resumes(tmp_path):
    prep = prepare(tmp_path, CLIENTS)
    run_dir = tmp_path / "run"
    lb = _loopback(tmp_path, prep, database=tmp_path / "superlink.db")
    try:
        lb.start()
        t, out = _in_background(lb, _config(prep, tmp_path))
        _wait(lambda: _rounds_done(run_dir) >= 1 or "error" in out, 900, "round 1")
        _wait(lambda: (run_dir / "state" / "ckpt-000001.json").exists(), 60, "the round-1 checkpoint")
        nodes = [lb.supernode(i) for i in range(CLIENTS)]
        lb.restart_superlink()
        t.join(timeout=120)  # `flwr run --stream` loses its SuperLink and exits with an error
        assert "error" in out and "SuperLink" in str(out["error"]), out
        done_before = _rounds_done(run_dir)
        assert 1 <= done_before < ROUNDS

        # The dead run's round-2 ClientApps may still be training; let them finish before resuming.
        _wait(lambda: not any(_clientapp_running(n.pid) for n in nodes), 600, "the dead run's ClientApps")
        lb.run(_config(prep, tmp_path, resume=True), timeout=900)
        assert all(p.poll() is None for p in nodes)  # the same SuperNode processes served the resumed run
    finally:
        lb.close()
    history = _check_ledger(run_dir)
    # Every device is sampled every round (q = 1) and each sampled device is accounted for. A device
    # whose reply is lost to the restart counts as failed, which is what a deployment would see too:
    # ε does not depend on who replied (the ledger check above), so that is not a failure of the test.
    for h in history:
        assert h["sampled_clients"] == CLIENTS, history
        assert h["included_clients"] + h["failed_clients"] + h["nonfinite_clients"] == CLIENTS, history
        assert h["included_clients"] >= 1, history
    assert history[0]["included_clients"] == CLIENTS, history  # before the restart, nothing went wrong
    result = json.loads((run_dir / "result.json").read_text())
    assert result["resumed_from_round"] == done_before
    assert sorted(int(r) for r in result["eval_loss"]) == list(range(done_before, ROUNDS + 1))
    print(f"resumed from round {done_before}; ε after {ROUNDS} rounds {history[-1]['epsilon']:.4g}")


def test_resume_flag_is_a_strict_boolean():
    from keyboard_fl.flower.task import FlowerSettings

    assert FlowerSettings.from_run_config({"resume": True}).resume is True
    assert FlowerSettings.from_run_config({"resume": "false"}).resume is False
    with pytest.raises(ValueError, match=r"run config resume: expected true or false, got 'yes'"):
        FlowerSettings.from_run_config({"resume": "yes"})
