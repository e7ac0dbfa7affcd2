"""Bytes per device on the wire: a Grid that weighs every message it pushes and pulls.

Flower 1.42 sends a message as a tree of content-addressed objects (the
message, its ``RecordDict``, each record, each array chunk), each serialized
with a small header. :func:`message_bytes` is the sum of those serialized
objects, i.e. the application payload one device downloads (``down``) or
uploads (``up``) for the message; HTTP framing is not counted, and the
SuperLink's deduplication of identical objects across devices (the same
global model broadcast to every node) does not reduce what each device pulls.

:class:`CountingGrid` wraps a Grid: ``push_messages`` weighs instructions per
destination node, ``pull_messages`` weighs replies per source node, and, when
given a path, rewrites a JSON summary after every call. Every message is also
filed under its kind: the SecAgg+ stage named in its ``secaggplus_configs``
record (``setup``, ``share_keys``, ``collect_masked_vectors``, ``unmask``),
else its message type (``train``, ``evaluate``); a reply goes under the kind
of the instruction it answers.

:class:`TcpRelay` counts the other layer: a relay on 127.0.0.1 between one
SuperNode and the SuperLink that forwards every TCP connection the node opens
and counts the bytes each way (gRPC, HTTP/2 and protobuf framing, polls,
heartbeats and reconnections included; no TLS on loopback).
"""

from __future__ import annotations

import functools
import json
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from flwr.app import Message
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

__all__ = ["CountingGrid", "TcpRelay", "message_bytes", "message_kind"]


def message_bytes(msg: Message) -> int:
    """Serialized size of every object of ``msg`` (what one device transfers for it)."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(msg).values())


def message_kind(msg: Message) -> str:
    """The SecAgg+ stage of an instruction, else its message type."""
    cfg = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    if cfg is not None and Key.STAGE in cfg:
        return str(cfg[Key.STAGE])
    return str(msg.metadata.message_type)


def _row() -> dict[str, int]:
    return {"down": 0, "up": 0, "messages_down": 0, "messages_up": 0}


class CountingGrid:
    """A Grid that counts, per node and direction, the messages and bytes it moves (everything else delegated)."""

    def __init__(self, grid: Grid, path: str | Path | None = None):
        self._grid = grid
        self._path = Path(path) if path else None
        self.per_node: dict[int, dict[str, int]] = {}
        self.per_kind: dict[str, dict[str, int]] = {}  # summed over nodes
        self._kind_of: dict[str, str] = {}  # pushed message id -> kind, to file its reply

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def _count(self, node: int, direction: str, msg: Message, kind: str) -> None:
        size = message_bytes(msg)
        for row in (self.per_node.setdefault(int(node), _row()), self.per_kind.setdefault(kind, _row())):
            row[direction] += size
            row[f"messages_{direction}"] += 1

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        kinds = [message_kind(m) for m in messages]
        for m, kind in zip(messages, kinds):
            self._count(m.metadata.dst_node_id, "down", m, kind)
        out = list(self._grid.push_messages(messages))
        self._kind_of.update(zip(out, kinds))
        self._write()
        return out

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        got = list(self._grid.pull_messages(message_ids))
        for m in got:
            if not m.has_error():
                kind = self._kind_of.get(m.metadata.reply_to_message_id, str(m.metadata.message_type))
                self._count(m.metadata.src_node_id, "up", m, kind)
        if got:
            self._write()
        return got

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        raise NotImplementedError("wrap CountingGrid in a polling grid (keyboard_fl.flower.strategy._PollingGrid)")

    def summary(self) -> dict:
        return {
            "per_node": {str(k): v for k, v in sorted(self.per_node.items())},
            "per_kind": dict(self.per_kind),
        }

    def _write(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.summary(), indent=1))
        tmp.replace(self._path)


class TcpRelay:
    """Listens on a free 127.0.0.1 port and relays each connection to ``target()``, counting bytes each way.

    ``counts()`` is ``{"down": bytes target → client, "up": client → target, "connections": opened}``
    since the relay started, over every connection, closed or open. Threads, one per direction and
    connection; :meth:`close` stops accepting and closes every connection.
    """

    def __init__(self, target: Callable[[], tuple[str, int]], bufsize: int = 1 << 16):
        self._target, self._bufsize = target, bufsize
        self._lock = threading.Lock()
        self._counts = {"down": 0, "up": 0, "connections": 0}
        self._socks: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, name=f"relay-{self.port}", daemon=True).start()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target())
            except OSError:
                client.close()
                continue
            pair = [client, upstream]
            with self._lock:
                self._counts["connections"] += 1
                self._socks += pair
            # When both directions have ended, close the pair.
            done = threading.Barrier(2, action=functools.partial(self._drop, pair))
            for src, dst, key in ((client, upstream, "up"), (upstream, client, "down")):
                threading.Thread(target=self._pump, args=(src, dst, key, done), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, key: str, done: threading.Barrier) -> None:
        try:
            while data := src.recv(self._bufsize):
                dst.sendall(data)
                with self._lock:
                    self._counts[key] += len(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)  # pass the end of stream on
        except OSError:
            pass
        try:
            done.wait()
        except threading.BrokenBarrierError:
            pass

    def _drop(self, pair: list[socket.socket]) -> None:
        with self._lock:
            self._socks = [s for s in self._socks if s not in pair]
        for sock in pair:
            sock.close()

    def close(self) -> None:
        self._closed = True
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        self._server.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pumps blocked in recv
            except OSError:
                pass
            sock.close()
