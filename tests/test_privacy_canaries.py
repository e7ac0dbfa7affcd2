"""Secret Sharer canaries: exposure on hand-made rankings, planting, completion."""

import math

import numpy as np
import pytest

from keyboard_fl.audit import completion
from keyboard_fl.data import Population, PopulationConfig
from keyboard_fl.privacy.canaries import CanaryConfig, CanarySource, draw_canaries, exposure, extrapolated_exposure


def test_exposure_on_hand_made_rankings():
    refs = np.arange(1024, dtype=float)  # scores 0..1023
    assert exposure(5000.0, refs) == pytest.approx(10.0)  # rank 1 of |R| = 1024 → log2 1024
    assert exposure(1023.0, refs) == pytest.approx(10.0 - 1.0)  # tie with the best reference: rank 2
    assert exposure(511.5, refs) == pytest.approx(10.0 - math.log2(513))  # 512 references above it
    assert exposure(-1.0, refs) == pytest.approx(10.0 - math.log2(1025))  # below everything


def test_exposure_of_a_random_phrase_is_about_one_bit_on_average():
    rng = np.random.default_rng(0)
    refs = rng.normal(size=2000)
    vals = [exposure(float(x), refs) for x in rng.normal(size=400)]
    # E[log2|R| - log2 rank] for a uniform rank is log2 e ≈ 1.44 bits
    assert np.mean(vals) == pytest.approx(1 / math.log(2), abs=0.2)


def test_extrapolated_exposure_follows_the_fitted_normal():
    rng = np.random.default_rng(1)
    refs = rng.normal(10.0, 2.0, size=20000)
    assert extrapolated_exposure(10.0, refs) == pytest.approx(1.0, abs=0.05)  # P(X ≥ mean) = 1/2
    # 3σ above the mean: -log2(1 - Φ(3)) ≈ 9.53 bits
    assert extrapolated_exposure(16.0, refs) == pytest.approx(9.53, abs=0.3)


def test_exposure_needs_references():
    with pytest.raises(ValueError):
        exposure(1.0, [])


def test_canaries_are_distinct_deterministic_and_planted_only_in_carriers_training_part():
    pop = Population(PopulationConfig(seed=3, num_train_users=40, num_heldout_users=5, num_public_users=5))
    ids = [u.user_id for u in pop.users("train")]
    cfg = CanaryConfig(num_canaries=2, repetitions=(3, 7), references=1000)
    canaries, refs = draw_canaries(cfg, ids)
    again, refs2 = draw_canaries(cfg, ids)
    assert canaries == again and refs == refs2
    secrets = [c.secret for c in canaries]
    assert len(set(secrets + refs)) == len(secrets) + len(refs) == 1002
    src = CanarySource(pop, canaries, cfg.prefix, cfg.seed)
    by_id = {u.user_id: u for u in src.users("train")}
    base = {u.user_id: u for u in pop.users("train")}
    for c in canaries:
        (uid,) = c.user_ids
        phrase = c.phrase(cfg.prefix)
        assert by_id[uid].train.count(phrase) == c.repetitions
        assert by_id[uid].test == base[uid].test  # held-out messages untouched
    others = [u for uid, u in by_id.items() if uid not in {c.user_ids[0] for c in canaries}]
    assert all(u == base[u.user_id] for u in others)
    assert all(not any(cfg.prefix in m for m in u.test) for u in src.users("heldout"))


def test_canary_config_validation():
    with pytest.raises(ValueError):
        CanaryConfig(references=10)
    with pytest.raises(ValueError):
        CanaryConfig(repetitions=(0,))


class _Oracle:
    """Suggests the secret's next digit first, as a model that memorised it would."""

    def __init__(self, secret):
        self.digits = secret.split()

    def suggest(self, text, k=3):
        typed = text.split()[3:]  # after "my pin is"
        nxt = self.digits[len(typed)] if len(typed) < len(self.digits) else "ok"
        return [nxt, "the", "a"][:k]


def test_completion_detects_a_leaking_strip_and_a_clean_one():
    leak = completion(_Oracle("4 9 2 7"), "my pin is", "4 9 2 7")
    assert leak["completes_top1"] and leak["top1_digits"] == 4
    clean = completion(_Oracle("1 1 1 1"), "my pin is", "4 9 2 7")
    assert not clean["completes_top1"] and not clean["completes_top3"]


def test_audit_of_a_tiny_run_with_canaries_writes_exposure_to_metrics(canary_run):
    import json

    from keyboard_fl.audit import audit_run
    from keyboard_fl.config import RunConfig

    cfg = RunConfig.load(canary_run / "config.json")  # tiny central, 2 canaries, 1,000 references (conftest)
    res = audit_run(canary_run)  # the fixture audited it already; auditing again gives the same result
    m = json.loads((canary_run / "metrics.json").read_text())
    assert m["audit"]["references"] == 1000 and len(m["audit"]["canaries"]) == 2
    for row in res["canaries"]:
        assert 1 <= row["rank"] <= 1001
        assert 1 <= row["public_only_rank"] <= 1001  # the tiny preset pretrains on public data
        assert row["exposure"] <= math.log2(1000) + 1e-9
    secrets, _ = draw_canaries(cfg.canaries, [u.user_id for u in Population(cfg.population).users("train")])
    text = (canary_run / "metrics.json").read_text()
    assert all(c.phrase(cfg.canaries.prefix) not in text for c in secrets)  # the audit does not store secrets
