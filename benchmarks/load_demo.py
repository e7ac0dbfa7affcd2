"""Load test of the suggestion demo: N concurrent typists against one server, for a bounded time.

Starts the demo app (keyboard_fl.demo.app.create_app, served by uvicorn) in a
separate process on 127.0.0.1 only, serving one finished run (by default a
tiny dp-fedavg run trained into a temporary directory). Then ``--clients``
asyncio clients (httpx) each "type" generic English phrases one keystroke at a
time: every keystroke is one ``POST /api/suggest`` with the text before the
cursor, the request a real keyboard page sends. A client waits for its answer
(plus ``--think-ms``) before the next keystroke. After ``--seconds`` the run
stops and the figures go to ``benchmarks/results/demo_load.json``:
requests, errors (non-200 or transport failures), throughput and latency
percentiles as the clients see them.

    python benchmarks/load_demo.py                      # 50 clients, 30 s, tiny run
    python benchmarks/load_demo.py --run runs/main/dp-fedavg --clients 50 --seconds 30

No typed text is logged (the phrases are generic, not user data).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "demo_load.json"
HOST = "127.0.0.1"  # loopback only: a load test never listens on a public interface

PHRASES = [
    "see you tomorrow at the station",
    "are you coming to the party tonight",
    "thanks so much for your help today",
    "i will be there in ten minutes",
    "can you call me when you get home",
    "what time does the movie start",
    "sorry i am running a bit late",
    "let me know if you need anything",
    "happy birthday hope you have a great day",
    "did you see the game last night",
    "i think we should meet next week",
    "good morning how are you feeling",
]

SERVER = """
import json, sys, threading, time, uvicorn
from keyboard_fl.demo.app import create_app
from keyboard_fl.demo.batching import BatchConfig
from keyboard_fl.demo.loading import load_run
run_dir, host, port, backend, window_ms, max_batch, stats = sys.argv[1:8]
batch = BatchConfig(window_ms=float(window_ms), max_batch=int(max_batch))
app = create_app({"dp-fedavg": load_run(run_dir, "dp-fedavg", backend=backend)}, warm_batches=True, batch=batch)
b = app.state.models["dp-fedavg"].batcher

def report():  # the batcher's counters, every half second (uvicorn re-raises SIGTERM after shutdown)
    while True:
        time.sleep(0.5)
        with open(stats + ".tmp", "w") as f:
            json.dump({"batches": b.batches, "items": b.items}, f)
        __import__("os").replace(stats + ".tmp", stats)

threading.Thread(target=report, daemon=True).start()
uvicorn.run(app, host=host, port=int(port), access_log=False, log_level="warning")
"""


def _cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) used so far by process ``pid`` (default: this one), from /proc."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _tiny_run(workdir: Path) -> Path:
    from keyboard_fl.config import preset
    from keyboard_fl.train.run import run

    out = workdir / "dp-fedavg"
    print("training a tiny dp-fedavg run for the demo …", flush=True)
    run(preset("tiny", mode="dp-fedavg"), out, log=lambda s: None)
    return out


async def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 900) -> None:
    import httpx

    t = time.monotonic()
    async with httpx.AsyncClient() as c:
        while time.monotonic() - t < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"demo server exited with {proc.returncode}")
            try:
                if (await c.get(f"{url}/api/models", timeout=2)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError("demo server did not become ready")


class RawClient:
    """One keep-alive HTTP/1.1 connection per typist, written by hand: a load generator must cost far
    less CPU than the server it measures (they share the cores); httpx costs about as much as the server."""

    def __init__(self, url: str):
        self.host, self.port = url.removeprefix("http://").split(":")
        self.conn = None

    async def post(self, path: str, payload: dict) -> tuple[int, dict]:
        body = json.dumps(payload).encode()
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
        req = head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        if self.conn is None:
            self.conn = await asyncio.open_connection(self.host, int(self.port))
        reader, writer = self.conn
        try:
            writer.write(req)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            data = await reader.readexactly(length)
        except Exception:
            self.conn = None
            writer.close()
            raise
        return int(status_line.split()[1]), json.loads(data)


async def _typist(i: int, url: str, deadline: float, think: float, lat: list, errors: dict, client) -> None:
    rng = random.Random(i)
    client = client if client is not None else RawClient(url)
    while time.monotonic() < deadline:
        phrase = rng.choice(PHRASES)
        for n in range(len(phrase) + 1):
            if time.monotonic() >= deadline:
                return
            t = time.perf_counter()
            try:
                if isinstance(client, RawClient):
                    status, data = await client.post("/api/suggest", {"model": "dp-fedavg", "text": phrase[:n]})
                else:
                    r = await client.post(f"{url}/api/suggest", json={"model": "dp-fedavg", "text": phrase[:n]})
                    status, data = r.status_code, r.json()
                ok = status == 200 and isinstance(data.get("suggestions"), list)
                key = None if ok else f"http_{status}"
            except Exception as e:  # noqa: BLE001 - counted, the test goes on
                key = type(e).__name__
            if key is None:
                lat.append(time.perf_counter() - t)
            else:
                errors[key] = errors.get(key, 0) + 1
            if think:
                await asyncio.sleep(think)


async def _load(url: str, clients: int, seconds: float, think: float, kind: str) -> dict:
    import httpx

    lat: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as shared:
        client = shared if kind == "httpx" else None  # raw: one connection per typist
        t0 = time.monotonic()
        deadline = t0 + seconds
        await asyncio.gather(*(_typist(i, url, deadline, think, lat, errors, client) for i in range(clients)))
        elapsed = time.monotonic() - t0
    ms = np.asarray(lat) * 1e3
    n_err = sum(errors.values())
    pct = lambda q: round(float(np.percentile(ms, q)), 2) if len(ms) else None
    return {
        "requests": len(lat) + n_err,
        "ok": len(lat),
        "errors": n_err,
        "error_kinds": errors,
        "error_rate": n_err / max(len(lat) + n_err, 1),
        "elapsed_s": round(elapsed, 2),
        "throughput_rps": round(len(lat) / elapsed, 1),
        "latency_ms": {
            "p50": pct(50),
            "p90": pct(90),
            "p99": pct(99),
            "max": pct(100),
            "mean": round(float(ms.mean()), 2) if len(ms) else None,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=None, help="a finished run directory (default: train a tiny one)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument(
        "--think-ms", type=float, default=0.0, help="pause after each answer (0: closed loop, maximum load)"
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--backend", choices=("jax", "onnx"), default="jax", help="the server's model back-end")
    ap.add_argument("--window-ms", type=float, default=1.0, help="micro-batching window (BatchConfig.window_ms)")
    ap.add_argument("--max-batch", type=int, default=64, help="rows per batched call; 1 = no batching")
    ap.add_argument("--client", choices=("raw", "httpx"), default="raw", help="load generator (raw: cheapest)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or _tiny_run(Path(tmp))
        port = _free_port()
        url = f"http://{HOST}:{port}"
        stats_path = Path(tmp) / "batch_stats.json"
        argv = [str(run_dir), HOST, str(port), args.backend, str(args.window_ms), str(args.max_batch), str(stats_path)]
        server = subprocess.Popen([sys.executable, "-c", SERVER, *argv], cwd=ROOT)
        try:
            asyncio.run(_wait_ready(url, server))
            load_before = os.getloadavg()
            cpu0 = (_cpu_seconds(server.pid), _cpu_seconds())
            res = asyncio.run(_load(url, args.clients, args.seconds, args.think_ms / 1e3, args.client))
            cpu1 = (_cpu_seconds(server.pid), _cpu_seconds())
            load_after = os.getloadavg()
            time.sleep(0.6)  # the server writes its batch counters every 0.5 s
            batches = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
            alive_until_end = server.poll() is None
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    result = {
        "benchmark": "demo_load",
        "clients": args.clients,
        "seconds": args.seconds,
        "think_ms": args.think_ms,
        "run": "tiny dp-fedavg (trained for the test)" if args.run is None else str(args.run),
        "endpoint": "POST /api/suggest, one request per keystroke, closed loop per client",
        "backend": args.backend,
        "batching": {"window_ms": args.window_ms, "max_batch": args.max_batch, **batches},
        "mean_batch": round(batches["items"] / batches["batches"], 2) if batches.get("batches") else None,
        "client": args.client,
        **res,
        # CPU per request does not depend much on what else runs on the machine, unlike latency: with the
        # cores to itself, the server process (one Python thread + XLA) answers at most 1 / server_ms per second.
        "cpu_ms_per_request": {
            "server": round((cpu1[0] - cpu0[0]) * 1e3 / max(res["requests"], 1), 3),
            "clients": round((cpu1[1] - cpu0[1]) * 1e3 / max(res["requests"], 1), 3),
        },
        "server_alive_until_end": alive_until_end,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_at_start": [round(x, 2) for x in load_before],
            "loadavg_at_end": [round(x, 2) for x in load_after],
            "python": platform.python_version(),
            "nice": os.nice(0),
            "note": "server and clients share the machine's cores (and other engineers' jobs)",
        },
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
