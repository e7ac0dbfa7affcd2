"""A Grid that hands each message to a ClientApp in this process (tests and benchmarks, no SuperLink).

Messages cross as protobuf bytes and are parsed again, as on the wire, so no
object is shared between the server side and a device. Each node is a
``(ClientApp, Context)``: the Context's state persists across messages, as a
SuperNode keeps it. A ClientApp that raises is answered with an error reply,
as a SuperNode does. Flower's own simulation engine needs Ray, which this
project does not install; the loopback launcher runs the real SuperLink.
"""

from __future__ import annotations

from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp
from flwr.common import serde

__all__ = ["InProcessGrid"]


class InProcessGrid:
    """``push_messages`` runs the destination's ClientApp at once; ``pull_messages`` returns the replies."""

    def __init__(self, apps: dict[int, tuple[ClientApp, Context]], run_id: int = 1):
        self.apps = apps
        self.replies: dict[str, Message] = {}
        self.received: list[Message] = []  # every reply the server side pulled
        self.run = type("Run", (), {"run_id": run_id})()

    @staticmethod
    def _wire(msg: Message) -> Message:
        return serde.message_from_proto(serde.message_to_proto(msg))

    def get_node_ids(self) -> list[int]:
        return list(self.apps)

    def push_messages(self, messages) -> list[str]:
        ids = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = m.object_id
            m.metadata.__dict__["_run_id"] = self.run.run_id
            app, ctx = self.apps[m.metadata.dst_node_id]
            ins = self._wire(m)
            try:
                reply = app(ins, ctx)
            except Exception as e:  # a SuperNode answers a crashed ClientApp with an error reply
                reply = Message(Error(code=0, reason=repr(e)), reply_to=ins)
            reply.metadata.__dict__["_message_id"] = reply.object_id
            self.replies[m.metadata.message_id] = self._wire(reply)
            ids.append(m.metadata.message_id)
        return ids

    def pull_messages(self, message_ids) -> list[Message]:
        out = [self.replies.pop(i) for i in list(message_ids) if i in self.replies]
        self.received.extend(out)
        return out
