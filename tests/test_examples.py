"""Tests for keyboard_fl.train.examples: rows, batches and a client's local steps."""

import numpy as np
import pytest

from keyboard_fl.tokenizer import PAD_ID
from keyboard_fl.train.examples import UserRows, as_batch, client_steps, message_rows, user_rows


def _rows(n, width=5, start=10):
    """n distinguishable rows: row i is filled with start + i."""
    return np.repeat(np.arange(start, start + n, dtype=np.int32)[:, None], width, axis=1)


@pytest.mark.parametrize("n", [2, 3, 7, 8, 9, 20])
def test_message_rows_cover_every_target_once(n):
    ids = list(range(4, 4 + n))
    seq_len = 4
    rows = message_rows(ids, seq_len)
    assert all(r.shape == (seq_len + 1,) and r.dtype == np.int32 for r in rows)
    targets = [t for r in rows for t in r[1:] if t != PAD_ID]
    assert targets == ids[1:]
    inputs = [i for r in rows for i, t in zip(r[:-1], r[1:]) if t != PAD_ID]
    assert inputs == ids[:-1]
    for a, b in zip(rows, rows[1:]):  # consecutive rows overlap by one id
        assert b[0] == a[-1]


def test_user_rows_and_batch():
    class FakeTok:
        def encode(self, m):
            return [2] + [ord(c) for c in m] + [3]

    rows = user_rows(FakeTok(), ["ab", "cde"], seq_len=4)
    assert rows.shape == (2, 5)
    stream = [2, 97, 98, 3, 2, 99, 100, 101, 3]
    np.testing.assert_array_equal(rows[0], stream[:5])
    np.testing.assert_array_equal(rows[1], stream[4:] + [PAD_ID] * 0)
    assert user_rows(FakeTok(), [], seq_len=4).shape == (0, 5)
    b = as_batch(np.array([[2, 5, 6, 0, 0]], np.int32))
    np.testing.assert_array_equal(b["inputs"], [[2, 5, 6, 0]])
    np.testing.assert_array_equal(b["targets"], [[5, 6, 0, 0]])
    np.testing.assert_array_equal(b["weights"], [[1, 1, 0, 0]])
    assert b["weights"].dtype == np.float32


@pytest.mark.parametrize(
    "n, batch, max_ex, epochs", [(3, 4, 16, 1), (16, 4, 16, 2), (40, 8, 20, 1), (0, 4, 8, 1), (5, 2, 5, 3)]
)
def test_client_steps_shape_padding_and_cap(n, batch, max_ex, epochs):
    rows = _rows(n)
    out = client_steps(rows, batch_size=batch, max_examples=max_ex, epochs=epochs, rng=np.random.default_rng(0))
    spe = -(-max_ex // batch)
    assert out.shape == (epochs * spe, batch, 5) and out.dtype == np.int32
    kept = set(range(10, 10 + n)[-max_ex:]) if n else set()  # most recent rows
    for e in range(epochs):
        epoch = out[e * spe : (e + 1) * spe].reshape(-1, 5)
        real = epoch[epoch[:, 0] != PAD_ID]
        assert sorted(real[:, 0]) == sorted(kept)  # each kept row exactly once per epoch
        assert (epoch[epoch[:, 0] == PAD_ID] == PAD_ID).all()  # padding rows are all PAD
    # padding only after the real rows of an epoch: real steps come first
    assert (out.reshape(epochs, -1, 5)[:, : min(n, max_ex), 0] != PAD_ID).all()


def test_client_steps_deterministic_in_rng():
    rows = _rows(30)
    a = client_steps(rows, batch_size=4, max_examples=16, epochs=2, rng=np.random.default_rng(1))
    b = client_steps(rows, batch_size=4, max_examples=16, epochs=2, rng=np.random.default_rng(1))
    c = client_steps(rows, batch_size=4, max_examples=16, epochs=2, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[:4], a[4:])  # epochs are shuffled independently


def test_user_rows_container():
    per_user = [_rows(3, start=10), _rows(0, start=0), _rows(2, start=20)]
    ur = UserRows(per_user)
    assert len(ur) == 3
    np.testing.assert_array_equal(ur.counts(), [3, 0, 2])
    np.testing.assert_array_equal(ur.user(0), per_user[0])
    assert ur.user(1).shape == (0, 5)
    np.testing.assert_array_equal(ur.user(2), per_user[2])
    assert len(UserRows([])) == 0
