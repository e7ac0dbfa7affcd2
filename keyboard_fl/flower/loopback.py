"""Flower's deployment engine on 127.0.0.1: one SuperLink, N SuperNodes, one ``flwr run``.

Nothing here is simulated: every SuperNode is its own OS process holding one
user's corpus on disk, and every message it receives runs the ClientApp in a
fresh ``flwr-clientapp`` process, as on a fleet of phones. Python API::

    from keyboard_fl.flower.loopback import prepare, Loopback
    prep = prepare(work_dir, num_clients=3)                 # tokenizer, per-client dirs, eval set
    with Loopback(work_dir, prep.client_dirs) as lb:        # superlink + supernodes (free ports)
        lb.run({**prep.run_config, "num-rounds": 3})        # flwr run ... --stream, waits
    # on exit every process group is killed and checked gone

or ``python -m keyboard_fl.flower.loopback --clients 3 --rounds 3 --out DIR``.
By hand, the same thing is (``prepare`` writes ``DIR/clients/000 …``)::

    export FLWR_HOME=DIR/flwr_home FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
    printf '[superlink]\\ndefault = "loopback"\\n[superlink.loopback]\\naddress = "127.0.0.1:8000"\\ninsecure = true\\n' \\
        > $FLWR_HOME/config.toml
    flower-superlink --insecure --disable-runtime-dependency-installation --port 8000 &
    flower-supernode --insecure --superlink 127.0.0.1:8000 --port 9094 \\
        --node-config "data-dir='DIR/clients/000' partition-id=0" &          # one per client, own --port
    flwr run keyboard_fl/flower/app loopback --stream \\
        --run-config "tokenizer='DIR/tokenizer.model' eval-data='DIR/eval' run-dir='DIR/run'"

Offline notes (Flower 1.42, no network): ``flwr new`` needs the network, so the
App project is the hand-written ``keyboard_fl/flower/app/pyproject.toml``; the
SuperLink gets ``--disable-runtime-dependency-installation`` (otherwise it
``uv sync``-s the app's dependencies for every ServerApp/ClientApp); the
children get ``FLWR_TELEMETRY_ENABLED=0`` and ``FLWR_DISABLE_UPDATE_CHECK=1``
(the update check runs in a non-daemon thread that calls out to the network);
``FLWR_HOME`` is a private directory whose ``config.toml`` names the
SuperLink as federation ``loopback`` (address and ``insecure = true``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keyboard_fl.flower import APP_DIR
from keyboard_fl.flower.procstat import cpu_seconds_in_sessions, processes_in_sessions

__all__ = [
    "Loopback",
    "Prepared",
    "cpu_seconds_in_sessions",
    "free_port",
    "loopback_run_config",
    "prepare",
    "processes_in_sessions",
]

BIN = Path(sys.executable).parent  # flower-superlink, flower-supernode, flwr next to this python


@dataclasses.dataclass(frozen=True)
class Prepared:
    """Files for a loopback federation: per-client corpora, public tokenizer, eval set."""

    client_dirs: list[Path]
    tokenizer: Path
    eval_data: Path
    run_config: dict[str, Any]  # the run-config keys these files fill in


class _OneUser:
    """A ``UserSource`` with exactly one training user (what one device holds)."""

    def __init__(self, user, source_desc: dict):
        self.user, self.source_desc = user, source_desc

    def users(self, split):
        if split == "train":
            yield self.user

    def num_users(self, split) -> int:
        return int(split == "train")

    def describe(self) -> dict:
        return {"kind": "one-user", "user_id": self.user.user_id, "source": self.source_desc}


def prepare(work: str | Path, num_clients: int, *, preset_name: str = "tiny", seed: int = 0) -> Prepared:
    """Materialize one training user per client dir, the public tokenizer and a held-out eval set.

    The tokenizer is trained on the public split only (DESIGN.md §3); the eval
    set is the held-out users (never trained on). Client ``i`` holds the
    ``i``-th training user that has at least one training message.
    """
    from keyboard_fl.config import preset
    from keyboard_fl.data import Population, materialize
    from keyboard_fl.tokenizer import Tokenizer, train_tokenizer

    work = Path(work)
    cfg = preset(preset_name, seed=seed)
    pop = Population(cfg.population)
    tok_path = work / "tokenizer.model"
    if not tok_path.exists():
        tok = train_tokenizer((m for u in pop.users("public") for m in u.train), cfg.tokenizer)
        work.mkdir(parents=True, exist_ok=True)
        tok.save(tok_path)
    else:
        Tokenizer.load(tok_path)
    dirs = []
    users = (u for u in pop.users("train") if u.train)
    for i in range(num_clients):
        d = work / "clients" / f"{i:03d}"
        materialize(_OneUser(next(users), pop.describe()), d, splits=("train",))
        dirs.append(d)
    eval_dir = work / "eval"
    materialize(pop, eval_dir, splits=("heldout",))
    run_config = {
        "preset": preset_name,
        "seed": seed,
        "num-users": num_clients,
        "tokenizer": str(tok_path),
        "eval-data": str(eval_dir),
    }
    return Prepared(dirs, tok_path, eval_dir, run_config)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


class Loopback:
    """A SuperLink and one SuperNode per client dir, each in its own session, on free ports.

    Use as a context manager; :meth:`close` kills every session it started
    (SIGTERM, then SIGKILL) and checks that no process of them is left.
    Logs go to ``work/logs/``.
    """

    def __init__(
        self,
        work: str | Path,
        client_dirs: list[Path],
        *,
        app_dir: Path = APP_DIR,
        env: Mapping[str, str] | None = None,
        database: str | Path | None = None,
        node_config: Mapping[int, str] | None = None,
        count_wire: bool = False,
    ):
        self.work = Path(work)
        self.count_wire = count_wire  # each SuperNode dials the SuperLink through a byte-counting relay
        self.relays: list = []  # keyboard_fl.flower.traffic.TcpRelay per client, when count_wire
        self.database = Path(database) if database else None  # SuperLink state file: survives a restart
        self.node_config = dict(node_config or {})  # extra --node-config entries per client index (e.g. faults)
        self.client_dirs = [Path(d) for d in client_dirs]
        self.app_dir = Path(app_dir)
        self.flwr_home = self.work / "flwr_home"
        self.logs = self.work / "logs"
        self.procs: list[subprocess.Popen] = []
        self.port: int | None = None
        self.env = dict(os.environ)
        self.env.update(
            {
                "FLWR_HOME": str(self.flwr_home),
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "FLWR_TELEMETRY_ENABLED": "0",
                "FLWR_DISABLE_UPDATE_CHECK": "1",
                "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
                "XLA_FLAGS": os.environ.get(
                    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
                ),
                "PYTHONUNBUFFERED": "1",
                "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",  # SuperExec starts a ClientApp within 0.1 s (default 1 s)
            }
        )
        self.env.update(env or {})

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Loopback:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "wb")
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.work, start_new_session=True
        )
        log.close()
        self.procs.append(proc)
        return proc

    def start(self, timeout: float = 180.0) -> None:  # a SuperLink took > 60 s to listen at load ~50
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        (self.flwr_home / "config.toml").write_text(
            '[superlink]\ndefault = "loopback"\n\n'
            f'[superlink.loopback]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        link = self._spawn_superlink("superlink")
        _wait_port(self.port, timeout, link)
        if self.count_wire:
            from keyboard_fl.flower.traffic import TcpRelay

            self.relays = [TcpRelay(lambda: ("127.0.0.1", self.port)) for _ in self.client_dirs]
        for i, d in enumerate(self.client_dirs):
            superlink = f"127.0.0.1:{self.relays[i].port if self.relays else self.port}"
            self._spawn(
                f"supernode-{i}",
                [
                    str(BIN / "flower-supernode"),
                    "--insecure",
                    "--superlink",
                    superlink,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(free_port()),
                    "--node-config",
                    f"data-dir={_toml_value(str(d))} partition-id={i} {self.node_config.get(i, '')}".strip(),
                ],
            )

    def _spawn_superlink(self, name: str) -> subprocess.Popen:
        args = [str(BIN / "flower-superlink"), "--insecure", "--disable-runtime-dependency-installation"]
        args += ["--host", "127.0.0.1", "--port", str(self.port)]
        return self._spawn(name, args + (["--database", str(self.database)] if self.database else []))

    @property
    def superlink(self) -> subprocess.Popen:
        """The SuperLink process running now (the newest one started)."""
        return [p for p in self.procs if "flower-superlink" in str(p.args[0])][-1]

    def supernode(self, i: int) -> subprocess.Popen:
        return [p for p in self.procs if "flower-supernode" in str(p.args[0])][i]

    def restart_superlink(self, timeout: float = 180.0) -> subprocess.Popen:
        """SIGKILLs the SuperLink's session and starts a new one on the same port (and ``database``)."""
        old = self.superlink
        os.killpg(old.pid, signal.SIGKILL)  # a crash, not a shutdown
        old.wait()
        n = sum("flower-superlink" in str(p.args[0]) for p in self.procs)
        link = self._spawn_superlink(f"superlink-{n}")
        _wait_port(self.port, timeout, link)
        return link

    def run(
        self, run_config: Mapping[str, Any], *, timeout: float = 600.0, name: str = "flwr_run"
    ) -> subprocess.CompletedProcess:
        """``flwr run APP loopback --stream`` with ``run_config`` overrides; waits for the run to end.

        Runs may follow one another on the same SuperLink and SuperNodes; ``name`` names the
        run's log (``logs/NAME.log``) and its run-config file."""
        self.work.mkdir(parents=True, exist_ok=True)
        overrides = self.work / f"{name}_config.toml"
        overrides.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in run_config.items()))
        args = [str(BIN / "flwr"), "run", str(self.app_dir), "loopback", "--stream", "--run-config", str(overrides)]
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.work, start_new_session=True
            )
            self.procs.append(proc)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill(proc)
                raise TimeoutError(f"flwr run did not finish in {timeout}s; see {self.logs}") from None
        out = log_path.read_text(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"flwr run exited with {proc.returncode}:\n{out[-3000:]}")
        return subprocess.CompletedProcess(args, proc.returncode, out, "")

    @staticmethod
    def _kill(proc: subprocess.Popen, grace: float = 5.0) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)  # the whole session: superexec and app processes too
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue

    def wire_bytes(self) -> list[dict[str, int]]:
        """Bytes each SuperNode has received (``down``) and sent (``up``) on TCP to the SuperLink so far
        (``count_wire = True``): see :class:`keyboard_fl.flower.traffic.TcpRelay`."""
        return [r.counts() for r in self.relays]

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by this federation's processes (:func:`cpu_seconds_in_sessions`)."""
        return cpu_seconds_in_sessions(self.sessions())

    def sessions(self) -> set[int]:
        return {p.pid for p in self.procs}  # start_new_session: pid == sid == pgid

    def close(self, timeout: float = 15.0) -> None:
        """Kill every process group started here (newest first) and wait until none is left."""
        for proc in reversed(self.procs):
            self._kill(proc)
        sids = self.sessions()
        deadline = time.monotonic() + timeout
        while (left := processes_in_sessions(sids)) and time.monotonic() < deadline:
            for pid in left:  # e.g. an app process that moved to its own group
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        for relay in self.relays:
            relay.close()
        if left:
            raise RuntimeError(f"processes still alive after teardown: {left}")


def loopback_run_config(prep: Prepared, work: str | Path, run_dir: str | Path, **overrides: Any) -> dict[str, Any]:
    """The run config of one ``flwr run`` over ``prep``'s files: its ``run-dir``, the XLA cache shared by every
    run under ``work`` (``work/jax_cache``), and ``overrides`` (``num_rounds=3`` → ``num-rounds = 3``)."""
    return {
        **prep.run_config,
        "run-dir": str(run_dir),
        "jax-cache": str(Path(work) / "jax_cache"),
        **{k.replace("_", "-"): v for k, v in overrides.items()},
    }


def run_loopback(
    work: str | Path,
    num_clients: int = 3,
    *,
    preset_name: str = "tiny",
    seed: int = 0,
    timeout: float = 600.0,
    node_config: Mapping[int, str] | None = None,
    **overrides: Any,
) -> dict:
    """Prepare, start, run, tear down; return ``result.json`` of the run (plus wall time)."""
    work = Path(work)
    prep = prepare(work, num_clients, preset_name=preset_name, seed=seed)
    run_dir = work / "run"
    run_config = loopback_run_config(prep, work, run_dir, **overrides)
    t0 = time.perf_counter()
    with Loopback(work, prep.client_dirs, node_config=node_config) as lb:
        lb.run(run_config, timeout=timeout)
    result = json.loads((run_dir / "result.json").read_text())
    result["wall_seconds"] = time.perf_counter() - t0
    return result


def _main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="DP-FedAvg over a real Flower SuperLink + SuperNodes on 127.0.0.1")
    ap.add_argument("--out", required=True, help="work directory (corpora, logs, run/)")
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients-per-round", type=float, default=None, help="expected cohort qN (default: all)")
    ap.add_argument("--noise-multiplier", type=float, default=1.0)
    ap.add_argument("--clip-norm", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--secagg", action="store_true", help="SecAgg+: the server sees only the masked sum")
    a = ap.parse_args(argv)
    res = run_loopback(
        a.out,
        a.clients,
        seed=a.seed,
        num_rounds=a.rounds,
        noise_multiplier=a.noise_multiplier,
        clip_norm=a.clip_norm,
        clients_per_round=float(a.clients_per_round or a.clients),
        secagg=a.secagg,
    )
    losses = res["eval_loss"]
    print(
        json.dumps(
            {
                "eval_loss": losses,
                "epsilon": res["privacy"]["epsilon"],
                "delta": res["privacy"]["delta"],
                "wall_seconds": round(res["wall_seconds"], 1),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
