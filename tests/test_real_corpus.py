"""Real text (issue 14): a shipped chat corpus by name, --public-corpus, and the recipe's steps, schedule and stopping."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import optax
import pytest
from typer.testing import CliRunner

from keyboard_fl.cli import app
from keyboard_fl.config import RunConfig, preset
from keyboard_fl.data import JsonlCorpus, Population, PopulationConfig, ReaderConfig, SplitConfig
from keyboard_fl.data.named import CACHE_ENV, NAMED, _module_dir, named_path
from keyboard_fl.models import init_params, make_loss_fn, param_count
from keyboard_fl.models.config import ModelConfig
from keyboard_fl.sources import source_of
from keyboard_fl.train.central import CentralConfig, central_optimizer, train_central, validation_loss
from keyboard_fl.train.rundata import split_by_user


@pytest.fixture(scope="module")
def chitchat(tmp_path_factory):
    pytest.importorskip("chitchat_dataset")  # the `corpus` extra; CI installs it with the test extra
    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
    yield named_path("chitchat")
    mp.undo()


def test_chitchat_is_real_chat_with_every_sender(chitchat):
    import chitchat_dataset

    senders, messages = set(), 0
    for convo in chitchat_dataset.Dataset().values():  # the package's own reader
        for turn in convo["messages"]:
            for m in turn:
                if m["text"].strip():
                    senders.add(m["sender"])
                    messages += 1
    lines = [json.loads(x) for x in chitchat.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == messages > 250_000
    assert {x["user_id"] for x in lines} == senders and len(senders) == 1315
    assert all(x["text"] == " ".join(x["text"].split()) and x["text"] for x in lines)
    c = JsonlCorpus(chitchat, ReaderConfig(split=SplitConfig(seed=0)))
    assert {s: c.num_users(s) for s in ("train", "heldout", "public")} == {"train": 1049, "heldout": 134, "public": 132}


def test_converted_file_is_deterministic(chitchat, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    again = named_path("chitchat")
    assert again != chitchat and again.read_bytes() == chitchat.read_bytes()


def test_missing_package_names_the_extra():
    missing = dataclasses.replace(NAMED["chitchat"], module="no_such_corpus_module_xyz")
    with pytest.raises(FileNotFoundError, match=r"pip install 'keyboard-fl\[corpus\]'"):
        _module_dir(missing)


def test_unknown_corpus_is_one_line_naming_the_shipped_ones(tmp_path):
    res = CliRunner().invoke(app, ["train", "--corpus", "nosuch", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "nosuch" in res.output and "chitchat" in res.output and "Traceback" not in res.output


def test_corpus_preset_is_chosen_with_a_corpus_and_fits_the_phone_budget(chitchat, tmp_path):
    res = CliRunner().invoke(app, ["config", "--preset", "corpus"])
    cfg = RunConfig.from_dict(json.loads(res.output))
    assert cfg.central.epochs and cfg.central.validation_fraction > 0 and cfg.central.warmup_steps > 0
    _, params = init_params(cfg.model, jax.random.key(0))
    assert param_count(params) <= 1_500_000


def test_public_corpus_choices(tmp_path):
    lines = [json.dumps({"user_id": f"u{i % 40}", "text": f"hello number {i}"}) for i in range(400)]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    other = tmp_path / "pub.jsonl"
    other.write_text("\n".join(json.dumps({"user_id": f"p{i}", "text": "the news today"}) for i in range(5)) + "\n")
    base = dataclasses.replace(
        preset("tiny"), corpus=str(tmp_path / "c.jsonl"), population=PopulationConfig(num_public_users=7)
    )
    own = source_of(base)
    assert {u.user_id for u in own.users("public")} < {f"u{i}" for i in range(40)}
    sim = source_of(dataclasses.replace(base, public_corpus="simulator"))
    assert [u.user_id for u in sim.users("public")] == [u.user_id for u in Population(base.population).users("public")]
    assert [u.user_id for u in sim.users("train")] == [u.user_id for u in own.users("train")]
    whole = source_of(dataclasses.replace(base, public_corpus=str(other)))
    assert sorted(u.user_id for u in whole.users("public")) == [f"p{i}" for i in range(5)]  # every user public
    with pytest.raises(ValueError, match="private corpus itself"):
        source_of(dataclasses.replace(base, public_corpus=str(tmp_path / "c.jsonl")))


def test_steps_scale_with_the_data():
    c = CentralConfig(steps=1000, batch_size=10, epochs=2.5)
    assert c.planned_steps(100) == 25 and c.planned_steps(10**6) == 1000
    assert CentralConfig(steps=7).planned_steps(10**6) == 7


def test_warmup_then_cosine_schedule():
    tx = central_optimizer(CentralConfig(learning_rate=1.0, warmup_steps=10), steps=110)
    p = {"w": np.zeros((), np.float32)}
    state = tx.init(p)
    rates = []
    for _ in range(110):  # Adam's first step moves by ~the learning rate: read it from the update
        u, state = tx.update({"w": np.ones((), np.float32)}, state, p)
        rates.append(-float(u["w"]))
    assert rates[0] == pytest.approx(0.0, abs=1e-6) and rates[10] == pytest.approx(1.0, rel=1e-3)
    assert rates[-1] == pytest.approx(0.1, rel=0.05) and max(rates) <= 1.0 + 1e-3
    assert isinstance(tx, optax.GradientTransformation)


def test_split_by_user_is_disjoint_and_seeded():
    per = [np.full((i + 1, 3), i, np.int32) for i in range(50)]
    tr, va = split_by_user(per, 0.2, seed=3, path=0)
    assert len(tr) + len(va) == sum(map(len, per))
    assert not set(np.unique(tr[:, 0])) & set(np.unique(va[:, 0])) and len(np.unique(va[:, 0])) > 0
    tr2, va2 = split_by_user(per, 0.2, seed=3, path=0)
    assert np.array_equal(va, va2) and not np.array_equal(va, split_by_user(per, 0.2, seed=4, path=0)[1])


def test_validation_stops_and_keeps_the_best_parameters():
    """Train on one pattern, validate on its opposite: validation loss rises, training stops, the best is kept."""
    cfg = ModelConfig(vocab_size=16, embed_dim=8, hidden_dim=16)
    graphdef, params = init_params(cfg, jax.random.key(0))
    loss_fn = make_loss_fn(graphdef)
    rows = np.tile(np.array([2] + [4, 5] * 8, np.int32), (64, 1))  # 4 → 5 → 4 ...
    val = np.tile(np.array([2] + [4, 6] * 8, np.int32), (16, 1))  # 4 → 6: what training unlearns
    conf = CentralConfig(
        steps=400, batch_size=8, learning_rate=0.05, validation_fraction=0.1, validate_every=5, patience=2
    )
    history: list[dict] = []
    best, losses = train_central(loss_fn, params, rows, conf, 0, val_rows=val, history=history)
    assert len(losses) < 400  # stopped early
    vals = [h["validation_loss"] for h in history]
    assert vals[-1] > min(vals) and len(losses) == history[-1]["step"]
    assert validation_loss(loss_fn, best, val, 8) == pytest.approx(min(vals), rel=1e-5)


@pytest.mark.slow
def test_corpus_run_with_simulator_public_text_canaries_and_audit(tmp_path):
    """`train --corpus FILE --public-corpus simulator --canaries` end to end, then the audit on the corpus run."""
    from keyboard_fl.audit import audit_run

    words = "hey how are you doing today i am fine thanks see you later at the game tonight".split()
    rng = np.random.default_rng(0)
    lines = [
        json.dumps({"user_id": f"user{u}", "text": " ".join(rng.choice(words, 6))})
        for _ in range(12)
        for u in range(80)
    ]
    corpus = tmp_path / "chat.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    args = ["train", "--mode", "central", "--preset", "tiny", "--corpus", str(corpus), "--out", str(out)]
    res = CliRunner().invoke(
        app,
        [*args, "--public-corpus", "simulator", "--canaries", "--set", "central.validation_fraction=0.1"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["corpus"] == str(corpus.resolve()) and m["data"]["public_corpus"] == "simulator"
    assert m["data"]["train_users"] < 80 and m["central_training"]["validation"]  # validation checks were logged
    result = audit_run(out)
    assert len(result["canaries"]) == 3
