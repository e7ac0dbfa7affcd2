"""``Loopback.wire_bytes``: each SuperNode's TCP bytes to the SuperLink, read from ``ss -tinp`` (no processes started)."""

from __future__ import annotations

import subprocess
import types

import pytest

pytest.importorskip("flwr")

from keyboard_fl.flower import loopback  # noqa: E402
from keyboard_fl.flower.loopback import Loopback  # noqa: E402

# What `ss -tinpH state established dst 127.0.0.1:49633` printed for a loopback federation (shortened): two
# SuperNodes (pids 9397, 9401; the second with two connections) and a process that is not one of them (9392).
SS = """\
0      0          127.0.0.1:45540    127.0.0.1:49633 users:(("flower-supernod",pid=9397,fd=12))
\t bbr wscale:10,10 rto:204 mss:32768 bytes_sent:11547 bytes_retrans:13 bytes_acked:11535 bytes_received:1562 segs_out:43
0      0          127.0.0.1:45528    127.0.0.1:49633 users:(("flower-superexe",pid=9392,fd=3))
\t bbr wscale:10,10 rto:204 bytes_sent:68154 bytes_acked:67879 bytes_received:20736 segs_out:491
0      0          127.0.0.1:45600    127.0.0.1:49633 users:(("flower-supernod",pid=9401,fd=12))
\t bbr bytes_sent:100 bytes_acked:100 bytes_received:2000 segs_out:4
0      0          127.0.0.1:45610    127.0.0.1:49633 users:(("flower-supernod",pid=9401,fd=13))
\t bbr bytes_sent:50 bytes_acked:40 bytes_received:7 segs_out:4
"""


def test_wire_bytes_sums_each_supernodes_connections_to_the_superlink(tmp_path, monkeypatch):
    lb = Loopback(tmp_path, [tmp_path / "a", tmp_path / "b"])
    lb.port = 49633
    lb.procs = [
        types.SimpleNamespace(pid=p, args=[f"/bin/{n}"])
        for p, n in [(9390, "flower-superlink"), (9397, "flower-supernode"), (9401, "flower-supernode")]
    ]
    calls = []

    def fake_run(args, **kwargs):
        calls.append(args)
        return subprocess.CompletedProcess(args, 0, SS, "")

    monkeypatch.setattr(loopback.subprocess, "run", fake_run)
    got = lb.wire_bytes()
    assert calls == [["ss", "-tinpH", "state", "established", "dst", "127.0.0.1:49633"]]
    assert got == {
        0: {"down": 1562, "up": 11535, "connections": [45540]},  # acknowledged bytes, not bytes_sent (retransmits)
        1: {"down": 2007, "up": 140, "connections": [45600, 45610]},
    }
