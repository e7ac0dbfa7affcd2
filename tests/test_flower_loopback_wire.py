"""Wire counters of the loopback launcher, without Flower processes: the byte-counting TCP relay
(:class:`keyboard_fl.flower.traffic.TcpRelay`) and the CPU seconds of a set of sessions."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("flwr")

from keyboard_fl.flower.loopback import cpu_seconds_in_sessions  # noqa: E402
from keyboard_fl.flower.traffic import TcpRelay  # noqa: E402


def _echo_server() -> socket.socket:
    """Answers every connection with ``b"ok:"`` + what it received, once the client has finished sending."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(4096):
                    data += chunk
                conn.sendall(b"ok:" + data)

    threading.Thread(target=serve, daemon=True).start()
    return srv


def test_tcp_relay_forwards_and_counts_bytes_each_way_over_every_connection():
    srv = _echo_server()
    relay = TcpRelay(lambda: srv.getsockname())
    try:
        for payload in (b"x" * 100_000, b"hello"):  # one large, one small connection, each closed after use
            with socket.create_connection(("127.0.0.1", relay.port)) as c:
                c.sendall(payload)
                c.shutdown(socket.SHUT_WR)
                got = b""
                while chunk := c.recv(65536):
                    got += chunk
            assert got == b"ok:" + payload
        deadline = time.monotonic() + 5
        while relay.counts()["down"] < 2 * 3 + 100_005 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert relay.counts() == {"up": 100_005, "down": 100_011, "connections": 2}
    finally:
        relay.close()
        srv.close()


def test_cpu_seconds_of_a_session_include_its_reaped_children():
    # A session leader that runs a child burning ~0.3 s of CPU, reaps it, then sleeps.
    code = (
        "import subprocess, sys, time; "
        "subprocess.run([sys.executable, '-c', 'import time\\nt=time.process_time()\\nwhile time.process_time()-t<0.3: pass']); "
        "print('done', flush=True); time.sleep(30)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == b"done"
        cpu = cpu_seconds_in_sessions({proc.pid})
        assert cpu["apps"] >= 0.3  # the reaped child
        assert cpu["total"] == pytest.approx(cpu["apps"] + cpu["infrastructure"])
        assert cpu["infrastructure"] < cpu["total"]  # the leader itself (python: infrastructure) mostly slept
    finally:
        proc.kill()
        proc.wait()
