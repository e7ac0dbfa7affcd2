"""Empirical ε of real (tiny) runs: planted phrases for every mode, canary clients for the federated ones.

Central and FedAvg must show a large empirical ε; a DP run's ε_lower must stay under the ε that bounds it
(replace-one for phrases, accounted for schedule-blind canary clients, unamplified given the schedule).
"""

import dataclasses
import json
import math
import shutil

import pytest
from typer.testing import CliRunner

from keyboard_fl.privacy.empirical import CanaryClientConfig
from keyboard_fl.privacy.phrase_canaries import PhraseCanaryConfig, draw_phrases, replace_one_epsilon

PHRASES = PhraseCanaryConfig(count=100, repetitions=20)


def _cfg(mode: str, **fed):
    """The tiny preset on 100 users with the default model's width, so that central can memorise phrases.

    Central runs 1,000 steps (~10 epochs of 100 users' rows): with the tiny preset's 60 steps and its
    64-unit LSTM the phrases are not memorised (AUROC ~0.6), and this test would fail.
    """
    from keyboard_fl.config import preset

    cfg = preset("tiny", mode=mode)
    cfg = dataclasses.replace(
        cfg,
        population=dataclasses.replace(cfg.population, num_train_users=100),
        model=dataclasses.replace(cfg.model, embed_dim=64, hidden_dim=256),
        central=dataclasses.replace(cfg.central, steps=1000),
        federated=dataclasses.replace(cfg.federated, **fed),
        phrase_canaries=PHRASES,
    )
    if mode != "central":
        cfg = dataclasses.replace(cfg, canary_clients=CanaryClientConfig(count=600, assignment="coin"))
    return cfg


_FED = {"central": {}, "fedavg": {}, "dp-fedavg": {"target_epsilon": 1.0}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``runs[mode]``: a finished run with phrase canaries (and canary clients), trained on first use.

    Central, FedAvg and DP-FedAvg at ε = 1; each test pays for the run it reads first (~40 s of CPU each).
    """
    from keyboard_fl.train.run import run

    root = tmp_path_factory.mktemp("empirical")

    class Runs(dict):
        def __missing__(self, mode):
            run(_cfg(mode, **_FED[mode]), root / mode, log=lambda s: None)
            self[mode] = root / mode
            return self[mode]

    return Runs()


# --- drawing and planting -----------------------------------------------------------------------------------


def test_phrases_are_drawn_again_identically_with_fair_coins_and_carriers_among_baseline_users():
    ids = [f"user{i}" for i in range(5000)]
    a, b = (
        draw_phrases(PhraseCanaryConfig(count=400), 3, ids, 50),
        draw_phrases(PhraseCanaryConfig(count=400), 3, ids, 50),
    )
    assert a.phrases == b.phrases and (a.inserted == b.inserted).all() and a.carriers == b.carriers
    assert 150 < a.inserted.sum() < 250
    assert set(a.carriers) <= set(ids[:50])  # the users the central baseline trains on
    words = [w for s in a.secrets for w in s.split()]
    assert len(words) == 800 == len(set(words))  # distinct words: no out-phrase shares an in-phrase's words
    assert all(p.startswith("my secret words are ") for p in a.phrases)
    assert draw_phrases(PhraseCanaryConfig(count=400), 4, ids, 50).phrases != a.phrases


def test_planted_phrases_are_typed_by_their_carrier_and_out_phrases_by_nobody():
    from keyboard_fl.config import preset
    from keyboard_fl.sources import private_source
    from keyboard_fl.train.rundata import training_users

    cfg = dataclasses.replace(
        preset("tiny", mode="central"), phrase_canaries=PhraseCanaryConfig(count=40, repetitions=7)
    )
    train, _ = training_users(cfg, private_source(cfg), lambda s: None)
    drawn = draw_phrases(cfg.phrase_canaries, cfg.seed, [train.user_id(i) for i in range(len(train))], 10_000)
    typed = {}
    for i in range(len(train)):
        u = train.user(i)
        for m in u.train:
            if m in drawn.phrases:
                typed.setdefault(m, []).append(u.user_id)
    for p, carrier, planted in zip(drawn.phrases, drawn.carriers, drawn.inserted):
        assert typed.get(p, []) == ([carrier] * 7 if planted else []), p


def test_replace_one_epsilon_is_at_least_the_add_remove_epsilon():
    from keyboard_fl.privacy import epsilon

    mech = {"name": "dp-fedavg", "clip_norm": 0.5, "noise_multiplier": 1.1}
    mech["participation"] = {"scheme": "poisson", "sampling_prob": 0.05, "population": 1000, "min_separation": None}
    m = {"mode": "dp-fedavg", "mechanism": mech, "rounds": 50, "delta": 1e-5, "epsilon": epsilon(1.1, 0.05, 50, 1e-5)}
    assert m["epsilon"] <= replace_one_epsilon(m) < 2 * m["epsilon"]
    assert replace_one_epsilon({"mode": "central"}) == math.inf
    assert replace_one_epsilon({**m, "mechanism": {"name": "unknown"}}) is None


# --- audits of real runs --------------------------------------------------------------------------------------


def test_central_memorises_planted_phrases_and_shows_a_large_empirical_epsilon(runs):
    from keyboard_fl.phrase_audit import phrase_audit_run

    r = phrase_audit_run(runs["central"])
    assert r["compared_epsilon"] == math.inf and r["score"] == "log-likelihood minus the public start's"
    assert r["auroc"] > 0.95 and r["epsilon_est"] > 10, r
    assert r["epsilon_lower"] > 1.5 and r["epsilon_lower"] >= 0.7 * r["epsilon_lower_max"], r
    saved = json.loads((runs["central"] / "metrics.json").read_text())["audit"]["phrases"]
    assert saved["epsilon_lower"] == pytest.approx(r["epsilon_lower"]) and saved["planted"] == r["planted"]


def test_fedavg_canary_clients_show_a_large_empirical_epsilon_given_their_schedule(runs):
    from keyboard_fl.empirical_audit import empirical_audit_run

    e = empirical_audit_run(runs["fedavg"])
    g = e["given_schedule"]
    assert e["accounted_epsilon"] == math.inf and g["compared_epsilon"] == math.inf
    assert g["auroc"] > 0.99 and g["epsilon_lower"] > 2.0 and g["epsilon_lower"] >= 0.8 * g["epsilon_lower_max"], g
    assert g["max_participations"] >= 1 and g["in_canaries"] > 100  # q = 0.12, 6 rounds: ~54% of ~300 inserted


def test_dp_run_empirical_epsilons_stay_below_the_epsilons_that_bound_them(runs):
    from keyboard_fl.empirical_audit import empirical_audit_run
    from keyboard_fl.phrase_audit import phrase_audit_run

    m = json.loads((runs["dp-fedavg"] / "metrics.json").read_text())
    assert m["epsilon"] == pytest.approx(1.0, abs=0.05)
    p = phrase_audit_run(runs["dp-fedavg"])
    assert m["epsilon"] <= p["compared_epsilon"] < 2 * m["epsilon"]
    assert p["epsilon_lower"] <= p["compared_epsilon"], p
    e = empirical_audit_run(runs["dp-fedavg"])
    for stat in ("final_model", "all_iterates"):
        assert e[stat]["epsilon_lower"] <= m["epsilon"], (stat, e[stat])
    g = e["given_schedule"]
    assert m["epsilon"] < g["compared_epsilon"] < math.inf and g["epsilon_lower"] <= g["compared_epsilon"], g


def test_main_job_reports_empirical_epsilon_of_its_runs(runs, tmp_path):
    """`keyboard-fl main` on finished runs: the empirical-privacy table, and audit.phrases / audit.empirical saved."""
    from keyboard_fl.cli import app

    out = tmp_path / "main"
    for mode in _FED:
        shutil.copytree(runs[mode], out / mode)
    res = CliRunner().invoke(app, ["main", "--out", str(out), "--preset", "tiny", "--empirical"])
    assert res.exit_code == 0, res.output
    assert "Empirical privacy" in res.output and "given" in res.output and "phrases" in res.output
    for mode in _FED:
        audit = json.loads((out / mode / "metrics.json").read_text())["audit"]
        assert "phrases" in audit and ("empirical" in audit) == (mode != "central")
