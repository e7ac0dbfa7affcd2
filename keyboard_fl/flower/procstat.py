"""Processes of a loopback federation, read from Linux ``/proc`` by session id.

The loopback deployment starts every Flower process in its own session, so a session id
names all of a component's processes, including the ``flwr-clientapp`` processes its
SuperExec spawns per message. No library reads ``cutime``/``cstime`` of reaped children
by session (psutil has no session filter), hence these few lines.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["cpu_seconds_in_sessions", "processes_in_sessions"]


def _session_stats(sids: set[int]) -> Iterator[tuple[int, str, list[str]]]:
    """(pid, command name, the stat fields after it) of every process whose session id is in ``sids``."""
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp session ...
        if int(fields[3]) in sids:
            yield int(p.name), stat[stat.index("(") + 1 : stat.rindex(")")], fields


def processes_in_sessions(sids: set[int]) -> list[int]:
    """Pids of live (non-zombie) processes whose session id is in ``sids`` (Linux /proc)."""
    return [pid for pid, _, fields in _session_stats(sids) if fields[0] != "Z"]


def cpu_seconds_in_sessions(sids: set[int]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by the processes whose session id is in ``sids`` (Linux /proc).

    ``apps``: the ``flwr-clientapp``/``flwr-serverapp`` processes (one per message, one per run), live,
    exited (zombies) or reaped by their SuperExec (its ``cutime``/``cstime``). ``infrastructure``: the
    long-lived processes themselves (SuperLink, SuperNodes, SuperExecs, the ``flwr`` CLI): routing,
    polling and heartbeats, which grow with wall time. ``total``: both.
    """
    apps = infra = 0
    for _, comm, fields in _session_stats(sids):
        own, reaped = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])  # utime stime cutime cstime
        apps += reaped + (own if comm.startswith("flwr-") else 0)
        infra += 0 if comm.startswith("flwr-") else own
    tck = os.sysconf("SC_CLK_TCK")
    return {"apps": apps / tck, "infrastructure": infra / tck, "total": (apps + infra) / tck}
