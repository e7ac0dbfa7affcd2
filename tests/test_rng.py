"""Named randomness (keyboard_fl.rng): every stream from the one seed, all distinct."""

from __future__ import annotations

import re
from pathlib import Path

import jax
import numpy as np
import pytest

from keyboard_fl import rng
from keyboard_fl.rng import Stream

PACKAGE = Path(rng.__file__).resolve().parent

# A hex literal of 2+ digits or ``seed + <number>`` anywhere in the package's code is a
# hand-picked seed constant (masks and byte values are written in decimal or as
# ``(1 << 64) - 1``); randomness must come from keyboard_fl.rng instead.
SEED_CONSTANT = re.compile(r"0x[0-9A-Fa-f]{2,}|seed\s*\+\s*[0-9]")


def test_no_hand_picked_seed_constants_in_the_package():
    hits = [f"{p.relative_to(PACKAGE.parent)}:{i}: {line.strip()}"
            for p in sorted(PACKAGE.rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if SEED_CONSTANT.search(line)]
    assert hits == [], "derive these from keyboard_fl.rng streams:\n" + "\n".join(hits)


def test_grep_would_catch_the_old_constants():
    for line in ("fold_in(root, 0xFED)", "SeedSequence([seed, 0xCE])", "cfg.seed + 7919", "CanaryConfig(seed=seed + 1234)"):
        assert SEED_CONSTANT.search(line), line


def _bits(key) -> tuple[int, ...]:
    return tuple(np.asarray(jax.random.key_data(key)).ravel().tolist())


def test_streams_are_distinct_and_deterministic():
    ids = [int(s) for s in Stream]
    assert len(ids) == len(set(ids)) and min(ids) > 0
    keys = {s: _bits(rng.key(0, s)) for s in Stream}
    assert len(set(keys.values())) == len(Stream)
    draws = {s: tuple(rng.generator(0, s).integers(2**62, size=4)) for s in Stream}
    assert len(set(draws.values())) == len(Stream)
    assert keys[Stream.COHORT] == _bits(rng.key(0, Stream.COHORT))  # same seed, same key
    assert draws[Stream.CANARIES] == tuple(rng.generator(0, Stream.CANARIES).integers(2**62, size=4))


def test_path_and_seed_select_distinct_members():
    members = {_bits(rng.key(seed, Stream.ROUND, r)) for seed in (0, 1) for r in range(50)}
    assert len(members) == 100
    # a path is folded in order: (round, user) != (user, round), and a prefix differs from the whole
    assert _bits(rng.key(0, Stream.CLIENT_DATA, 1, 2)) != _bits(rng.key(0, Stream.CLIENT_DATA, 2, 1))
    assert _bits(rng.key(0, Stream.CLIENT_DATA, 1)) != _bits(rng.key(0, Stream.CLIENT_DATA, 1, 0))
    # the folded key equals folding the stream root by hand (what the Flower strategy does per round)
    assert _bits(rng.key(3, Stream.NOISE, 7)) == _bits(jax.random.fold_in(rng.key(3, Stream.NOISE), 7))
    seqs = {tuple(rng.sequence(0, Stream.CLIENT_DATA, r, u).generate_state(4)) for r in range(10) for u in range(10)}
    assert len(seqs) == 100


def test_population_sequences_never_equal_a_stream():
    users = {tuple(rng.user_sequence(0, f"u{i:06d}").generate_state(4)) for i in range(200)}
    streams = {tuple(rng.sequence(0, s, *p).generate_state(4)) for s in Stream for p in ((), (0,), (0, 0))}
    assert len(users) == 200 and not users & streams


@pytest.mark.parametrize("args", [(-1, Stream.INIT), (1.5, Stream.INIT), (0, Stream.INIT, -2), (0, 99)])
def test_bad_seed_or_path_is_a_clear_error(args):
    with pytest.raises(ValueError):
        rng.sequence(*args)


def test_jax_path_entries_must_fit_32_bits():
    with pytest.raises(ValueError, match="2\\*\\*32"):
        rng.key(0, Stream.FLOWER_CLIENT, 1, rng.user_hash("u000001"))
