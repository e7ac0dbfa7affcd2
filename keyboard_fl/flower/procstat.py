"""Processes of a loopback federation, read from Linux ``/proc`` by session id.

The loopback deployment starts every Flower process in its own session, so a session id
names all of a component's processes, including the ``flwr-clientapp`` processes its
SuperExec spawns per message. No library reads ``cutime``/``cstime`` of reaped children
by session (psutil has no session filter), hence these few lines.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cpu_seconds_in_sessions", "processes_in_sessions"]


def processes_in_sessions(sids: set[int]) -> list[int]:
    """Pids of live (non-zombie) processes whose session id is in ``sids`` (Linux /proc)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, sid = fields[0], int(fields[3])
        if sid in sids and state != "Z":
            out.append(int(p.name))
    return out


def cpu_seconds_in_sessions(sids: set[int]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by the processes whose session id is in ``sids`` (Linux /proc).

    ``apps``: the ``flwr-clientapp``/``flwr-serverapp`` processes (one per message, one per run), live,
    exited (zombies) or reaped by their SuperExec (its ``cutime``/``cstime``). ``infrastructure``: the
    long-lived processes themselves (SuperLink, SuperNodes, SuperExecs, the ``flwr`` CLI): routing,
    polling and heartbeats, which grow with wall time. ``total``: both.
    """
    apps = infra = 0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) not in sids:
            continue
        own, reaped = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])  # utime stime cutime cstime
        apps += reaped + (own if comm.startswith("flwr-") else 0)
        infra += 0 if comm.startswith("flwr-") else own
    tck = os.sysconf("SC_CLK_TCK")
    return {"apps": apps / tck, "infrastructure": infra / tck, "total": (apps + infra) / tck}
