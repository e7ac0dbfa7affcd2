"""Population simulator: determinism, heterogeneity, splits, difficulty."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyboard_fl.data import Population, PopulationConfig, User, UserSource, load_resources, split_train_test
from keyboard_fl.data.calibrate import calibrate
from keyboard_fl.text import words

SMALL = PopulationConfig(seed=3, num_train_users=200, num_heldout_users=40, num_public_users=40)


@pytest.fixture(scope="module")
def pop() -> Population:
    return Population(SMALL)


def test_is_user_source(pop):
    assert isinstance(pop, UserSource)
    d = pop.describe()
    assert d["seed"] == 3 and d["users"] == {"train": 200, "heldout": 40, "public": 40}


def test_same_seed_same_user_any_order(pop):
    other = Population(SMALL)
    for uid in ["u0000007", "u0000150", "u0000239"]:
        assert pop.messages(uid) == other.messages(uid)
    # regenerating one user does not depend on what was generated before
    fresh = Population(SMALL)
    assert fresh.messages("u0000150") == pop.messages("u0000150")


def test_other_seed_differs(pop):
    other = Population(PopulationConfig(**{**SMALL.__dict__, "seed": 4}))
    assert pop.messages("u0000001") != other.messages("u0000001")


def test_independent_of_python_hash_seed():
    code = "from keyboard_fl.data import *; print(repr(Population(PopulationConfig(seed=1)).messages('u0000042')[:5]))"
    outs = set()
    for hs in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hs}
        outs.add(
            subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
        )
    assert len(outs) == 1


def test_splits_disjoint_and_shaped(pop):
    ids = {s: [u.user_id for u in pop.users(s)] for s in ("train", "heldout", "public")}
    assert [len(v) for v in ids.values()] == [200, 40, 40]
    all_ids = sum(ids.values(), [])
    assert len(set(all_ids)) == len(all_ids)
    for u in pop.users("heldout"):
        assert u.train == () and len(u.test) >= 1
    for u in pop.users("public"):
        assert u.test == () and len(u.train) >= 1


def test_test_fraction_holds_out_last_messages(pop):
    for u in list(pop.users("train"))[:60]:
        msgs = pop.messages(u.user_id)
        assert u.train + u.test == tuple(msgs)
        if len(msgs) >= 2:
            assert len(u.train) >= 1 and len(u.test) >= 1
            assert abs(len(u.test) - 0.2 * len(msgs)) <= 1
        else:
            assert u.test == ()


@given(n=st.integers(0, 300), f=st.floats(0.0, 0.99))
@settings(max_examples=200, deadline=None)
def test_split_train_test_property(n, f):
    msgs = [f"m{i}" for i in range(n)]
    tr, te = split_train_test(msgs, f)
    assert list(tr + te) == msgs
    if n >= 2:
        assert len(tr) >= 1
        if f > 0:
            assert len(te) >= 1
    else:
        assert te == ()


def test_message_counts_heavy_tailed_and_capped():
    p = Population(PopulationConfig(seed=0, num_train_users=1500, max_messages=400))
    counts = np.array([p.persona(p.user_id(i))[0].num_messages for i in range(1500)])
    med = np.median(counts)
    assert counts.min() >= 1 and counts.max() <= 400
    assert np.percentile(counts, 99) > 5 * med  # a few type a lot
    assert (counts < counts.mean()).mean() > 0.6  # most type less than the mean
    assert 20 <= counts.mean() <= 40


def test_users_differ_in_topics_and_style(pop):
    personas = [pop.persona(pop.user_id(i))[0] for i in range(100)]
    main_topics = Counter(p.topics[0] for p in personas)
    assert len(main_topics) >= 8
    assert len({p.case for p in personas}) == 3
    assert len({frozenset(p.abbrevs) for p in personas}) > 20


def test_personal_entities_recur_within_and_rare_across():
    p = Population(PopulationConfig(seed=0, num_train_users=300))
    first = set(p.res.persona["first_names"])
    users_of: Counter = Counter()
    recurring, eligible = 0, 0
    vocab = {}
    for i in range(300):
        uid = p.user_id(i)
        per = p.persona(uid)[0]
        msgs = p.messages(uid)
        c = Counter(w for m in msgs for w in words(m))
        vocab[uid] = c
        users_of.update(c.keys())
        names = [
            w
            for e in ("friend", "pet", "street", "work")
            for v in per.entities[e].values
            for w in words(v)
            if w not in first
        ]
        mentioned = [c[w] for w in names if c[w] > 0]
        if len(msgs) >= 40 and mentioned:
            eligible += 1
            recurring += max(mentioned) >= 2
    assert eligible >= 30 and recurring / eligible > 0.7
    personal = []
    for i in range(300):
        per = p.persona(p.user_id(i))[0]
        for v in per.entities["friend"].values + per.entities["street"].values:
            w = words(v)[0]
            if w not in first and w in vocab[p.user_id(i)]:
                personal.append(users_of[w])
    assert len(personal) > 50
    assert np.median(personal) == 1 and np.mean(np.array(personal) <= 2) > 0.9


def test_vocabulary_zipf_like():
    p = Population(PopulationConfig(seed=0, num_train_users=400))
    c = Counter(w for i in range(400) for m in p.messages(p.user_id(i)) for w in words(m))
    f = np.array(sorted(c.values(), reverse=True), dtype=float)
    assert len(f) > 3000
    r = np.arange(1, len(f) + 1)
    sel = slice(9, 1000)
    slope = np.polyfit(np.log(r[sel]), np.log(f[sel]), 1)[0]
    assert -1.6 < slope < -0.7  # Zipf-like: frequency ~ rank^-1


def test_ngram_difficulty_is_realistic():
    """A trigram model must find this about as hard as real keyboard text (top-1 ~13-16%)."""
    p = Population(PopulationConfig(seed=0, num_train_users=400, num_heldout_users=100, num_public_users=0))
    r = calibrate(p)["heldout_users"]
    assert 0.10 <= r["top1"] <= 0.22, r
    assert 0.18 <= r["top3"] <= 0.34, r


def test_resources_load_and_messages_nonempty(pop):
    res = load_resources()
    assert len(res.templates) >= 10 and sum(map(len, res.templates.values())) > 100
    for u in list(pop.users("public"))[:20]:
        assert all(m.strip() and words(m) for m in u.train)
    assert isinstance(next(pop.users("train")), User)
