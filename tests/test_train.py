"""Tests for keyboard_fl.train: central baseline, federated loop, resume, run directories."""

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest

from keyboard_fl import checkpoint
from keyboard_fl.config import FederatedConfig, RunConfig, preset
from keyboard_fl.models import ModelConfig, init_params, make_loss_fn
from keyboard_fl.privacy import epsilon
from keyboard_fl.train.central import CentralConfig, train_central
from keyboard_fl.train.examples import UserRows
from keyboard_fl.train.federated import DpSetup, train_federated

V, T = 30, 8
MODEL = ModelConfig(vocab_size=V, embed_dim=8, hidden_dim=16)
FED = FederatedConfig(
    rounds=5,
    clients_per_round=5,
    max_examples=4,
    batch_size=2,
    checkpoint_every=1,
    eval_every=1,
    client_lr=0.5,
    server_optimizer="nesterov",
    clip_norm=0.3,
)
DP = DpSetup.dp_fedavg(noise_multiplier=0.9, sampling_prob=0.25, delta=1e-3, population=20, clip_norm=0.3)
TIMING = {"seconds"}


def _user_rows(seed=0, users=20):
    rng = np.random.default_rng(seed)
    per = []
    for u in range(users):
        n = int(rng.integers(1, 7))
        rows = rng.integers(4, V, size=(n, T + 1)).astype(np.int32)
        rows[:, 1 + (u % 3) :: 3] = 4 + u % 5  # some learnable structure
        per.append(rows)
    return UserRows(per)


@pytest.fixture(scope="module")
def setup(compiled_round):
    graphdef, params = init_params(MODEL, jax.random.key(0))
    return make_loss_fn(graphdef), params, _user_rows(), compiled_round  # one compiled round per configuration


def _fed(setup, tmp, *, cfg=FED, seed=0, private=True, resume=False):
    loss_fn, params, rows, rounds = setup
    dp = DP if private else dataclasses.replace(DP, mechanism=None)  # as resolve_dp gives
    return train_federated(
        loss_fn,
        params,
        rows,
        cfg,
        dp,
        private=private,
        seed=seed,
        ckpt_dir=tmp,
        resume=resume,
        fl_round=rounds(loss_fn, cfg, dp, private, len(rows)),
    )


def _strip(history):
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


def _same_params(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def full_run(setup, tmp_path_factory):
    return _fed(setup, tmp_path_factory.mktemp("full"))


def test_federated_history_and_ledger(full_run):
    params, ledger, history = full_run
    assert [h["round"] for h in history] == list(range(1, FED.rounds + 1))
    assert ledger.rounds == FED.rounds
    assert history[-1]["epsilon"] == pytest.approx(epsilon(DP.noise_multiplier, DP.sampling_prob, FED.rounds, DP.delta))
    assert all(np.isfinite(h["train_loss"]) for h in history)
    assert all(h["noise_std"] == pytest.approx(DP.noise_multiplier * DP.clip_norm) for h in history)


@pytest.mark.parametrize("k", [2, 3])
def test_resume_equals_uninterrupted(setup, full_run, tmp_path, k):
    """Interrupted after k rounds (a run configured for k rounds), resumed with the full config."""
    _, _, first = _fed(setup, tmp_path, cfg=dataclasses.replace(FED, rounds=k))
    assert checkpoint.list_steps(tmp_path)[-1] == k
    params, ledger, history = _fed(setup, tmp_path, resume=True)
    p0, l0, h0 = full_run
    assert _same_params(params, p0)
    assert ledger == l0
    assert _strip(history) == _strip(h0[k:])  # the resumed call logs the rounds it ran (the run's log is metrics.jsonl)
    assert _strip(first + history) == _strip(h0)


ADAPTIVE = DpSetup.dp_fedavg(
    noise_multiplier=0.9,
    sampling_prob=0.25,
    delta=1e-3,
    population=20,
    clip_norm=0.05,
    adaptive_clip_quantile=0.5,
    adaptive_clip_count_stddev=1.0,
)


def test_resume_equals_uninterrupted_with_adaptive_clipping(setup, tmp_path):
    """A stateful mechanism: its clip norm rides in the checkpoint, so resuming replays it exactly."""
    loss_fn, params, rows, _ = setup
    kw = dict(private=True, seed=0)
    full = train_federated(loss_fn, params, rows, FED, ADAPTIVE, ckpt_dir=tmp_path / "full", resume=False, **kw)
    clips = [h["clip_norm"] for h in full[2]]
    assert clips[0] == pytest.approx(0.05) and len(set(clips)) == len(clips)  # C moves every round
    assert all(
        h["noise_std"] == pytest.approx(ADAPTIVE.mechanism.sum_noise_multiplier * h["clip_norm"]) for h in full[2]
    )
    part = tmp_path / "part"
    train_federated(
        loss_fn, params, rows, dataclasses.replace(FED, rounds=2), ADAPTIVE, ckpt_dir=part, resume=False, **kw
    )
    resumed = train_federated(loss_fn, params, rows, FED, ADAPTIVE, ckpt_dir=part, resume=True, **kw)
    assert _same_params(resumed[0], full[0]) and resumed[1] == full[1]
    assert _strip(resumed[2]) == _strip(full[2][2:])  # a resumed call returns only the rounds it ran
    assert full[1].epsilon() == epsilon(0.9, 0.25, FED.rounds, 1e-3)  # the count's share is inside z
    with pytest.raises(checkpoint.CheckpointError, match="mechanism"):  # a checkpoint of another mechanism
        train_federated(loss_fn, params, rows, FED, DP, ckpt_dir=part, resume=True, **kw)


def test_resume_skips_a_damaged_checkpoint(setup, full_run, tmp_path):
    _fed(setup, tmp_path, cfg=dataclasses.replace(FED, rounds=3))
    npz = tmp_path / "ckpt-000003.npz"
    npz.write_bytes(npz.read_bytes()[:-10])
    with pytest.warns(UserWarning, match="damaged"):
        params, _, history = _fed(setup, tmp_path, resume=True)  # from round 2
    assert _same_params(params, full_run[0])
    assert _strip(history) == _strip(full_run[2][2:])


def test_same_seed_same_metrics_other_seed_differs(setup, full_run, tmp_path):
    params, _, history = _fed(setup, tmp_path / "a")
    assert _same_params(params, full_run[0]) and _strip(history) == _strip(full_run[2])
    other_p, _, other_h = _fed(setup, tmp_path / "b", seed=1)
    assert not _same_params(other_p, full_run[0])
    assert _strip(other_h) != _strip(full_run[2])


def test_fedavg_is_not_private(setup, tmp_path):
    params, ledger, history = _fed(setup, tmp_path, cfg=dataclasses.replace(FED, rounds=2), private=False)
    assert ledger is None and "epsilon" not in history[-1]
    assert history[-1]["noise_std"] == 0.0


def test_central_lowers_loss_and_is_deterministic(setup):
    loss_fn, params, rows, _ = setup
    cfg = CentralConfig(steps=40, batch_size=8, learning_rate=1e-2)
    p1, losses = train_central(loss_fn, params, rows.rows, cfg, seed=0)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2
    p2, losses2 = train_central(loss_fn, params, rows.rows, cfg, seed=0)
    assert losses == losses2 and _same_params(p1, p2)
    with pytest.raises(ValueError, match="no training rows"):
        train_central(loss_fn, params, rows.rows[:0], cfg, seed=0)


# --- whole run directories (the shared tiny runs) ------------------------------

METRIC_KEYS = {
    "top1",
    "top3",
    "perplexity",
    "ngram_top1",
    "ngram_top3",
    "params",
    "epsilon",
    "delta",
    "noise_multiplier",
    "sampling_prob",
    "rounds",
    "clip_norm",
    "population",
    "privacy_unit",
    "accountant",
}


def _metrics(d):
    return json.loads((d / "metrics.json").read_text())


def test_dp_metrics_keys_and_epsilon(tiny_runs):
    d = tiny_runs["dp-fedavg"]
    m = _metrics(d)
    assert METRIC_KEYS <= set(m)
    cfg = RunConfig.load(d / "config.json")
    assert m["rounds"] == cfg.federated.rounds and m["population"] == cfg.population.num_train_users
    assert m["privacy_unit"] == "user" and m["clip_norm"] == cfg.federated.clip_norm
    assert m["sampling_prob"] == pytest.approx(cfg.federated.clients_per_round / cfg.population.num_train_users)
    assert m["epsilon"] == epsilon(m["noise_multiplier"], m["sampling_prob"], m["rounds"], m["delta"])
    assert m["epsilon"] <= cfg.federated.target_epsilon * (1 + 1e-6)
    assert 0 < m["delta"] < 1 / m["population"]
    for line in (d / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert rec["epsilon"] == pytest.approx(
            epsilon(m["noise_multiplier"], m["sampling_prob"], rec["round"], m["delta"])
        )


def test_non_private_runs_say_so(tiny_runs):
    for mode in ("central", "fedavg"):
        m = _metrics(tiny_runs[mode])
        assert m["mode"] == mode and m["epsilon"] == "inf"
        for k in ("top1", "top3", "perplexity", "ngram_top1", "ngram_top3", "params"):
            assert k in m


def _training_messages(cfg, n_users=60):
    from keyboard_fl.data import Population

    msgs = []
    for i, u in enumerate(Population(cfg.population).users("train")):
        if i >= n_users:
            break
        msgs += [m for m in u.train if len(m) >= 25 and len(m.split()) >= 4]
    return msgs


def test_no_training_text_in_run_files(tiny_runs):
    for mode, d in tiny_runs.items():
        cfg = RunConfig.load(d / "config.json")
        msgs = _training_messages(cfg)
        assert len(msgs) > 20
        for f in d.rglob("*"):
            if not f.is_file() or f.name == "tokenizer.model":
                continue
            blob = f.read_bytes()
            low = blob.decode("utf-8", "ignore").casefold()
            for m in msgs:
                assert m.encode() not in blob and m.casefold() not in low, (mode, f.name, m)


def test_tokenizer_is_public_only(tiny_runs):
    """The tokenizer the run saved is the one trained on the public split alone."""
    from keyboard_fl.data import Population
    from keyboard_fl.tokenizer import train_tokenizer

    d = tiny_runs["dp-fedavg"]
    cfg = RunConfig.load(d / "config.json")
    tok = train_tokenizer((m for u in Population(cfg.population).users("public") for m in u.train), cfg.tokenizer)
    assert tok.model_proto == (d / "tokenizer.model").read_bytes()


def test_run_directory_contents(tiny_runs):
    d = tiny_runs["dp-fedavg"]
    for name in ("config.json", "tokenizer.model", "metrics.json", "metrics.jsonl"):
        assert (d / name).is_file()
    assert checkpoint.list_steps(d / "model") == [0]
    assert checkpoint.list_steps(d / "checkpoints")[-1] == RunConfig.load(d / "config.json").federated.rounds
    assert not [p for p in d.rglob("*") if "tmp" in p.name]


def _model_params(d):
    from keyboard_fl.tokenizer import Tokenizer

    cfg = RunConfig.load(d / "config.json")
    tok = Tokenizer.load(d / "tokenizer.model")
    _, template = init_params(dataclasses.replace(cfg.model, vocab_size=tok.vocab_size), jax.random.key(0))
    return checkpoint.load(d / "model", 0, template)[0]


def test_run_resumed_from_checkpoint_equals_uninterrupted(tiny_runs, tmp_path):
    """A dp-fedavg run killed after its first checkpoint, resumed, ends where the uninterrupted one did."""
    from keyboard_fl.train.run import run

    src = tiny_runs["dp-fedavg"]
    d = tmp_path / "dp"
    shutil.copytree(src, d)
    steps = checkpoint.list_steps(d / "checkpoints")
    assert len(steps) >= 3
    for s in steps[1:-1]:  # killed after the first checkpoint ...
        for suffix in (".json", ".npz"):
            (d / "checkpoints" / f"ckpt-{s:06d}{suffix}").unlink()
    npz = d / "checkpoints" / f"ckpt-{steps[-1]:06d}.npz"  # ... while a later one was half written
    npz.write_bytes(npz.read_bytes()[:100])
    shutil.rmtree(d / "model")
    (d / "metrics.json").unlink()
    (d / "learning_curve.png").unlink(missing_ok=True)
    cfg = RunConfig.load(d / "config.json")
    with pytest.warns(UserWarning, match="damaged"):
        m = run(cfg, d, resume=True, log=lambda s: None)
    m0 = _metrics(src)
    drop = lambda x: {k: v for k, v in x.items() if k not in TIMING}
    assert drop(_metrics(d)) == drop(m0)
    assert m["epsilon"] == m0["epsilon"]
    assert _same_params(_model_params(d), _model_params(src))
    lines = lambda p: [drop(json.loads(ln)) for ln in (p / "metrics.jsonl").read_text().splitlines()]
    assert lines(d) == lines(src)


def test_finished_run_is_not_overwritten(tiny_runs, tmp_path):
    from keyboard_fl.train.run import run

    d = tmp_path / "c"
    shutil.copytree(tiny_runs["central"], d)
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        run(preset("tiny", mode="central"), d, log=lambda s: None)


def test_transformer_trains_federated_and_checkpoints(tmp_path):
    cfg = ModelConfig(
        kind="transformer", vocab_size=V, embed_dim=8, hidden_dim=16, num_layers=1, num_heads=2, context=T
    )
    graphdef, params = init_params(cfg, jax.random.key(0))
    loss_fn = make_loss_fn(graphdef)
    fed = dataclasses.replace(FED, rounds=3, server_optimizer="adam", server_lr=0.05)
    p, ledger, history = train_federated(
        loss_fn, params, _user_rows(), fed, DP, private=True, seed=0, ckpt_dir=tmp_path, resume=False
    )
    assert ledger.rounds == 3 and all(np.isfinite(h["train_loss"]) for h in history)
    assert not _same_params(p, params)
    from keyboard_fl.fl.round import make_server_optimizer, server_init

    state = server_init(params, make_server_optimizer("adam", 0.05))
    step, (restored, _), meta = checkpoint.load_latest(tmp_path, (state.params, state.opt_state))
    assert step == 3 and meta["round"] == 3 and _same_params(restored, p)
