"""Named randomness (keyboard_fl.rng): every stream from the one seed, all distinct."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from keyboard_fl import rng
from keyboard_fl.rng import Stream

PACKAGE = Path(rng.__file__).resolve().parent

# Hand-picked seed constants: a hex literal (``fold_in(root, 0xFED)``,
# ``SeedSequence([seed, 0xCE])``) or ``seed + <number>``. A hex literal compared
# with something (a Unicode range, ``0xD800 <= cp``) is not a seed; any other is
# reported, so randomness has to come from keyboard_fl.rng.
SEED_PLUS = re.compile(r"seed\s*\+\s*[0-9]")


def seed_constants(source: str, name: str = "<src>") -> list[str]:
    """``line: text`` of each hand-picked seed constant in ``source``."""
    tree = ast.parse(source, name)
    lines = source.splitlines()
    compared = {id(c) for n in ast.walk(tree) if isinstance(n, ast.Compare) for c in [n.left, *n.comparators]}
    hits = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and type(n.value) is int and id(n) not in compared:
            text = ast.get_source_segment(source, n) or ""
            if text[:2].lower() == "0x":
                hits.append(n.lineno)
    hits += [i for i, line in enumerate(lines, 1) if SEED_PLUS.search(line)]
    return [f"{i}: {lines[i - 1].strip()}" for i in sorted(set(hits))]


def test_no_hand_picked_seed_constants_in_the_package():
    hits = [
        f"{p.relative_to(PACKAGE.parent)}:{h}"
        for p in sorted(PACKAGE.rglob("*.py"))
        for h in seed_constants(p.read_text(), str(p))
    ]
    assert hits == [], "derive these from keyboard_fl.rng streams:\n" + "\n".join(hits)


def test_the_check_catches_the_old_constants():
    for line in (
        "k = fold_in(root, 0xFED)",
        "s = SeedSequence([seed, 0xCE])",
        "x = f(cfg.seed + 7919)",
        "c = CanaryConfig(seed=seed + 1234)",
        "_FAULT_TAG = 0xFA17",
    ):
        assert seed_constants(line), line
    assert seed_constants("ok = 0xD800 <= cp <= 0xDFFF") == []


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
