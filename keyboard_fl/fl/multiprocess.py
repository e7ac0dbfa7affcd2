"""Several JAX processes, one sharded round: process-group setup, a loopback launcher, a check worker.

``jax.distributed.initialize`` joins N processes through a coordination
service run by process 0; ``jax.devices()`` then lists every process's
devices, :func:`keyboard_fl.fl.sharding.client_mesh` spans them, and the
round's one ``psum`` crosses processes through XLA's CPU collectives over TCP
(gloo, ``jax_cpu_collectives_implementation``). Every process runs the same
program with the same seed and feeds only its own devices' shards
(:func:`keyboard_fl.fl.sharding.shard_cohort`).

Failure handling (measured in ``tests/test_fl_multiprocess.py``): when a peer
dies, the collective a survivor is in fails at once ("Gloo ... Connection
reset by peer"); a survivor that is not in a collective, or whose peer hangs,
is stopped by the coordination service once the peer misses heartbeats for
``heartbeat_timeout_s``. The worker turns the first into a one-line error and
exit status :data:`EXIT_PEER_LOST`. JAX's distributed client catches SIGTERM
(preemption notices), so the launcher's watchdog ends stragglers with SIGKILL.

Usage::

    python -m keyboard_fl.fl.multiprocess --processes 2 --rounds 3   # N processes on 127.0.0.1

Each process prints one JSON line (its devices and a digest of the
parameters); ``--processes 1`` gives the single-process reference. The check
trains the bigram model of :mod:`keyboard_fl.testing` on a synthetic cohort:
it checks the plumbing, not a keyboard model. On several hosts, set
``KEYBOARD_FL_COORDINATOR=host:port``, ``KEYBOARD_FL_NUM_PROCESSES`` and
``KEYBOARD_FL_PROCESS_ID`` on each and run ``--worker`` there.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from keyboard_fl.hostdevices import ENV, FLAG

__all__ = ["EXIT_PEER_LOST", "ProcessGroup", "initialize", "run_check", "spawn", "watch"]

# Exit status of a worker whose collective failed because a peer process is gone.
EXIT_PEER_LOST = 3
_ENV = ("KEYBOARD_FL_COORDINATOR", "KEYBOARD_FL_NUM_PROCESSES", "KEYBOARD_FL_PROCESS_ID")


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
    """One process's place in a group of JAX processes."""

    # "host:port" of the coordination service (process 0 listens there).
    coordinator: str
    # Processes in the group.
    num_processes: int
    # This process's rank, 0 .. num_processes - 1 (0 runs the coordinator).
    process_id: int
    # A peer silent this long is declared dead and the survivors are stopped (JAX default: 100 s).
    heartbeat_timeout_s: int = 100
    # Seconds to wait for every process to join before giving up.
    init_timeout_s: int = 120

    def __post_init__(self):
        if self.num_processes < 1 or not 0 <= self.process_id < self.num_processes:
            raise ValueError(f"process_id {self.process_id} not in 0..{self.num_processes - 1}")
        if ":" not in self.coordinator:
            raise ValueError(f"coordinator must be host:port, got {self.coordinator!r}")

    def to_env(self) -> dict[str, str]:
        return dict(zip(_ENV, (self.coordinator, str(self.num_processes), str(self.process_id)), strict=True))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProcessGroup | None:
        """The group named by ``KEYBOARD_FL_COORDINATOR`` etc., or None if unset."""
        env = os.environ if env is None else env
        if not env.get(_ENV[0]):
            return None
        missing = [k for k in _ENV[1:] if not env.get(k, "").isdigit()]
        if missing:
            raise ValueError(f"${_ENV[0]} is set but {', '.join('$' + k for k in missing)} is not an integer")
        return cls(env[_ENV[0]], int(env[_ENV[1]]), int(env[_ENV[2]]))


def initialize(group: ProcessGroup) -> None:
    """``jax.distributed.initialize`` with gloo CPU collectives; call before JAX computes anything."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        group.coordinator,
        group.num_processes,
        group.process_id,
        initialization_timeout=group.init_timeout_s,
        heartbeat_timeout_seconds=group.heartbeat_timeout_s,
        shutdown_timeout_seconds=group.heartbeat_timeout_s,
    )


def run_check(rounds: int, seed: int = 0, *, devices: int | None = None, on_result=None, drill_s: float = 0.0) -> dict:
    """``rounds`` sharded DP-FedAvg rounds of the toy bigram model; returns devices and a parameter digest.

    The same seed gives the same cohort and keys in every process; the
    result depends on the process count only through float summation order.
    ``on_result(result)`` is called once the rounds are done; then, for fault
    drills, more rounds run (unrecorded) for ``drill_s`` seconds.
    """
    import jax
    import numpy as np

    from keyboard_fl.fl.round import AggregatorConfig, build_round, make_server_optimizer
    from keyboard_fl.fl.sharding import client_mesh
    from keyboard_fl.testing import toy_cohort, toy_init, toy_loss

    mesh = client_mesh(devices)
    agg = AggregatorConfig("dp-fedavg", 0.3, 1.3, 4.0)
    fl_round = build_round(toy_loss, 0.5, make_server_optimizer("sgd", 1.0), agg, mesh=mesh)
    state = fl_round.init(toy_init(jax.random.key(seed)))
    cohort = toy_cohort(seed, 8, num_real=5)  # capacity 8: split evenly over 1, 2, 4 or 8 devices
    losses = []
    for r in range(rounds):
        state, m = fl_round.apply(state, cohort, jax.random.fold_in(jax.random.key(seed), r))
        losses.append(float(m.train_loss))  # replicated: every process can read it
    flat = np.concatenate([np.ravel(np.asarray(x, np.float32)) for x in jax.tree.leaves(state.params)])
    out = {
        "process": jax.process_index(),
        "processes": jax.process_count(),
        "devices": mesh.size,
        "local_devices": jax.local_device_count(),
        "train_loss": losses,
        "params": flat.tolist(),
        "sha256": hashlib.sha256(flat.tobytes()).hexdigest(),
    }
    if on_result is not None:
        on_result(out)
    end, r = time.monotonic() + drill_s, rounds
    while time.monotonic() < end:
        state, m = fl_round.apply(state, cohort, jax.random.fold_in(jax.random.key(seed), r))
        float(m.train_loss)  # wait for it
        r += 1
    return out


def _worker(a: argparse.Namespace) -> int:
    group = ProcessGroup.from_env()
    if group is None:
        raise SystemExit(f"--worker needs ${_ENV[0]}, ${_ENV[1]} and ${_ENV[2]} (the launcher sets them)")
    group = dataclasses.replace(group, heartbeat_timeout_s=a.heartbeat_timeout)
    import jax

    def report(out: dict) -> None:
        if a.out:
            with open(os.path.join(a.out, f"process-{group.process_id}.json"), "w") as f:
                json.dump(out, f)
        print(json.dumps({k: v for k, v in out.items() if k != "params"}), flush=True)

    initialize(group)
    try:
        run_check(a.rounds, a.seed, on_result=report, drill_s=a.drill_seconds)
    except jax.errors.JaxRuntimeError as e:
        first = str(e).strip().splitlines()[0][:300]
        print(
            f"keyboard_fl.fl.multiprocess: process {group.process_id} of {group.num_processes}: a collective "
            f"failed, a peer process is gone ({first}); exiting with status {EXIT_PEER_LOST}",
            file=sys.stderr,
            flush=True,
        )
        os._exit(EXIT_PEER_LOST)  # skip jax.distributed's shutdown barrier, which would wait for the dead peer
    return 0


def spawn(
    argv: Sequence[str], num_processes: int, *, port: int | None = None, env: Mapping[str, str] | None = None, **popen
) -> list[subprocess.Popen]:
    """Starts ``python *argv`` ``num_processes`` times on 127.0.0.1, each with its ``ProcessGroup`` env
    (plus ``env``; a ``KEYBOARD_FL_HOST_DEVICES`` there sets the CPU devices per process)."""
    coordinator = f"127.0.0.1:{port or _free_port()}"
    base = {**os.environ, **(env or {})}
    if env and ENV in env and "XLA_FLAGS" not in env:  # the device count import keyboard_fl put in XLA_FLAGS here
        base["XLA_FLAGS"] = re.sub(re.escape(FLAG) + r"=\d+", "", base.get("XLA_FLAGS", "")).strip()
    procs = []
    for i in range(num_processes):
        e = {**base, **ProcessGroup(coordinator, num_processes, i).to_env()}
        procs.append(subprocess.Popen([sys.executable, *argv], env=e, **popen))
    return procs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def watch(procs: Sequence[subprocess.Popen], *, grace: float = 30.0, timeout: float | None = None) -> list[int]:
    """Waits for every process. Once one fails, the others get ``grace`` s to exit on their own
    (they do, :data:`EXIT_PEER_LOST`), then SIGKILL (they catch SIGTERM). Returns the exit codes."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while any(p.poll() is None for p in procs):
        failed = any(p.returncode not in (None, 0) for p in procs)
        if failed or (deadline is not None and time.monotonic() > deadline):
            end = time.monotonic() + (grace if failed else 0.0)
            while any(p.poll() is None for p in procs) and time.monotonic() < end:
                time.sleep(0.1)
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGKILL)
                    p.wait()
            break
        time.sleep(0.1)
    return [p.returncode for p in procs]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="The sharded round over N JAX processes on 127.0.0.1 (gloo collectives)")
    ap.add_argument("--processes", type=int, default=2, help="processes to start (1: the single-process reference)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--local-devices", type=int, default=None, help="CPU devices per process (default: the package's)")
    ap.add_argument(
        "--heartbeat-timeout", type=int, default=100, help="seconds before a silent peer is declared dead (JAX default)"
    )
    ap.add_argument("--drill-seconds", type=float, default=0.0, help="keep running rounds this long after the check")
    ap.add_argument("--out", default=None, help="directory for process-<i>.json (parameters included)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return _worker(a)
    if a.processes < 1:
        ap.error("--processes must be >= 1")
    fwd = ["--rounds", str(a.rounds), "--seed", str(a.seed), "--heartbeat-timeout", str(a.heartbeat_timeout)]
    fwd += ["--drill-seconds", str(a.drill_seconds)] + (["--out", a.out] if a.out else [])
    env = {"KEYBOARD_FL_HOST_DEVICES": str(a.local_devices)} if a.local_devices else {}
    codes = watch(spawn(["-m", "keyboard_fl.fl.multiprocess", "--worker", *fwd], a.processes, env=env))
    if any(codes):
        print(f"keyboard_fl.fl.multiprocess: exit codes {codes}", file=sys.stderr)
        return EXIT_PEER_LOST if EXIT_PEER_LOST in codes else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
