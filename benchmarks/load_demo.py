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
import sys, uvicorn
from keyboard_fl.demo.app import create_app
app = create_app({"dp-fedavg": sys.argv[1]})
uvicorn.run(app, host=sys.argv[2], port=int(sys.argv[3]), access_log=False, log_level="warning")
"""


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


async def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
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


async def _typist(i: int, url: str, deadline: float, think: float, lat: list, errors: dict, client) -> None:
    rng = random.Random(i)
    while time.monotonic() < deadline:
        phrase = rng.choice(PHRASES)
        for n in range(len(phrase) + 1):
            if time.monotonic() >= deadline:
                return
            t = time.perf_counter()
            try:
                r = await client.post(f"{url}/api/suggest", json={"model": "dp-fedavg", "text": phrase[:n]})
                ok = r.status_code == 200 and isinstance(r.json().get("suggestions"), list)
                key = None if ok else f"http_{r.status_code}"
            except Exception as e:  # noqa: BLE001 - counted, the test goes on
                key = type(e).__name__
            if key is None:
                lat.append(time.perf_counter() - t)
            else:
                errors[key] = errors.get(key, 0) + 1
            if think:
                await asyncio.sleep(think)


async def _load(url: str, clients: int, seconds: float, think: float) -> dict:
    import httpx

    lat: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
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
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or _tiny_run(Path(tmp))
        port = _free_port()
        url = f"http://{HOST}:{port}"
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(run_dir), HOST, str(port)], cwd=ROOT)
        try:
            asyncio.run(_wait_ready(url, server))
            load_before = os.getloadavg()
            res = asyncio.run(_load(url, args.clients, args.seconds, args.think_ms / 1e3))
            alive_until_end = server.poll() is None
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
    result = {
        "benchmark": "demo_load",
        "clients": args.clients,
        "seconds": args.seconds,
        "think_ms": args.think_ms,
        "run": "tiny dp-fedavg (trained for the test)" if args.run is None else str(args.run),
        "endpoint": "POST /api/suggest, one request per keystroke, closed loop per client",
        **res,
        "server_alive_until_end": alive_until_end,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_at_start": [round(x, 2) for x in load_before],
            "python": platform.python_version(),
            "note": "server and clients share the machine's cores",
        },
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
