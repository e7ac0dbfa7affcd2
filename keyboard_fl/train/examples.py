"""From messages to fixed-shape training examples.

A message becomes ``<s> pieces </s>``. A user's messages are packed, in time
order, into one stream that is cut into rows of ``seq_len + 1`` ids
overlapping by one id, so every piece is a target exactly once and rows carry
little padding (per-message rows were ~40% padding on the simulated typists).
A row yields ``inputs = row[:-1]``, ``targets = row[1:]`` and ``weights`` (1 on
real targets, 0 on padding). Rows stay grouped per user, because the federated
trainer must only ever train a user's model on that user's rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from keyboard_fl.tokenizer import PAD_ID, Tokenizer


def message_rows(ids: Sequence[int], seq_len: int) -> list[np.ndarray]:
    """Rows of ``seq_len + 1`` ids (right-padded with ``PAD_ID``) covering ``ids``."""
    rows = []
    for start in range(0, max(len(ids) - 1, 1), seq_len):
        chunk = np.full(seq_len + 1, PAD_ID, np.int32)
        part = ids[start : start + seq_len + 1]
        chunk[: len(part)] = part
        rows.append(chunk)
    return rows


def user_rows(tokenizer: Tokenizer, messages: Iterable[str], seq_len: int) -> np.ndarray:
    """One user's messages packed in time order into rows: int32 [n, seq_len + 1]."""
    stream = [i for m in messages for i in tokenizer.encode(m)]
    rows = message_rows(stream, seq_len) if stream else []
    return np.stack(rows) if rows else np.zeros((0, seq_len + 1), np.int32)


def as_batch(rows: np.ndarray) -> dict[str, np.ndarray]:
    """``{"inputs", "targets", "weights"}`` from rows [..., seq_len + 1]."""
    targets = rows[..., 1:]
    return {
        "inputs": rows[..., :-1],
        "targets": targets,
        "weights": (targets != PAD_ID).astype(np.float32),
    }


def client_steps(
    rows: np.ndarray, *, batch_size: int, max_examples: int, epochs: int, rng: np.random.Generator
) -> np.ndarray:
    """One client's local steps: rows [S, batch_size, seq_len + 1], S fixed.

    At most ``max_examples`` rows are used (the user's most recent are kept
    when there are more); each epoch shuffles them with ``rng``. Shorter data
    is padded with all-``PAD_ID`` rows, i.e. zero-weight steps, so every client
    has the same static shape ``S = epochs · ceil(max_examples / batch_size)``.
    """
    steps_per_epoch = -(-max_examples // batch_size)
    out = np.full((epochs * steps_per_epoch, batch_size, rows.shape[-1]), PAD_ID, np.int32)
    rows = rows[-max_examples:]
    n = len(rows)
    for e in range(epochs):
        order = rng.permutation(n)
        for j in range(0, n, batch_size):
            sel = order[j : j + batch_size]
            out[e * steps_per_epoch + j // batch_size, : len(sel)] = rows[sel]
    return out


class UserRows:
    """Training rows of many users in one array, addressable by user index."""

    def __init__(self, per_user: Sequence[np.ndarray]):
        self.offsets = np.zeros(len(per_user) + 1, np.int64)
        self.offsets[1:] = np.cumsum([len(r) for r in per_user])
        width = per_user[0].shape[-1] if per_user else 1
        self.rows = np.concatenate(per_user) if per_user else np.zeros((0, width), np.int32)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def width(self) -> int:
        return self.rows.shape[-1]

    def user(self, i: int) -> np.ndarray:
        return self.rows[self.offsets[i] : self.offsets[i + 1]]

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)
