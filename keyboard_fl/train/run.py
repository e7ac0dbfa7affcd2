"""One training run, end to end: prepare data → pretrain → train → evaluate → write.

:func:`run` is a short main over those named steps. A run directory holds
everything needed to use, audit or resume the run::

    config.json        the RunConfig (resuming checks it is unchanged)
    tokenizer.model    SentencePiece, trained on the public split only
    checkpoints/       atomic checkpoints (federated modes): params, optimizer, ledger
    model/             final parameters (a verified checkpoint)
    metrics.jsonl      the one training log: a record per federated round,
                       with a quick evaluation every ``eval_every`` rounds
    metrics.json       final metrics: quality, baselines, privacy
    learning_curve.png

Training users are streamed (:mod:`keyboard_fl.train.stream`): a user's data
is made only when a round samples it; :mod:`keyboard_fl.train.rundata`
documents what is sampled for evaluation and the baselines.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from keyboard_fl import checkpoint, rng, runs
from keyboard_fl.config import RunConfig
from keyboard_fl.data import UserSource
from keyboard_fl.eval.metrics import TopKCounter, perplexity
from keyboard_fl.eval.neural import predict_messages
from keyboard_fl.models import init_params, make_loss_fn, param_count
from keyboard_fl.rng import Stream
from keyboard_fl.tokenizer import Tokenizer
from keyboard_fl.train.central import schedule_report, stop_note, train_central
from keyboard_fl.train.rundata import WORD_VOCAB_SIZE, Log, RunData, eval_users, first_messages, prepare
from keyboard_fl.train.shared import shared_json

__all__ = [
    "RunData",
    "WORD_VOCAB_SIZE",
    "eval_users",
    "evaluate_model",
    "first_messages",
    "prepare",
    "run",
    "write_json",
]

Progress = Callable[[str, int, int], None]  # (phase, done, total): drives the CLI's progress bar


def _no_progress(phase: str, done: int, total: int) -> None:
    pass


class Model(NamedTuple):
    """The model being trained: structure, parameters and its loss."""

    graphdef: Any
    params: Any
    loss_fn: Callable


def run(
    cfg: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    log: Log = print,
    source: UserSource | None = None,
    progress: Progress = _no_progress,
) -> dict:
    """Train and evaluate one run into ``out``; return its final metrics."""
    out = Path(out)
    cfg = start_run(cfg, out, resume, log)
    t_start = time.perf_counter()
    tokenizer, data = prepare(cfg, out, log, source)
    model = init_model(cfg, tokenizer, log)
    model, public_only = pretrain_step(cfg, out, tokenizer, data, model, log, progress)
    model, privacy = train_step(cfg, out, tokenizer, data, model, resume, log, progress)
    meta = {  # the tokenizer's size and hash let a loader refuse a tokenizer that is not this model's
        "config": cfg.to_dict(),
        "vocab_size": tokenizer.vocab_size,
        "tokenizer_sha256": hashlib.sha256(tokenizer.model_proto).hexdigest(),
    }
    checkpoint.save(out / runs.MODEL_DIR, 0, model.params, meta, keep=1)
    quality = evaluate_step(cfg, out, tokenizer, data, model, log)
    return write_step(cfg, out, data, model, quality, public_only, privacy, time.perf_counter() - t_start)


def start_run(cfg: RunConfig, out: Path, resume: bool, log: Log) -> RunConfig:
    """Create ``out`` and save the config (a resumed run keeps its saved one); refuse to overwrite a finished run."""
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / runs.CONFIG_FILE
    if resume and cfg_path.exists():
        saved = RunConfig.load(cfg_path)
        if saved != cfg:
            log(f"resuming with the run's saved configuration from {cfg_path}")
        cfg = saved
    elif not resume and (out / runs.METRICS_FILE).exists():
        raise FileExistsError(f"{out} already holds a finished run; pass --resume or choose another --out")
    checkpoint.atomic_write_text(cfg_path, cfg.to_json() + "\n")
    return cfg


def init_model(cfg: RunConfig, tokenizer: Tokenizer, log: Log) -> Model:
    model_cfg = type(cfg.model)(**{**cfg.model.__dict__, "vocab_size": tokenizer.vocab_size})
    graphdef, params = init_params(model_cfg, rng.key(cfg.seed, Stream.INIT))
    log(f"model: {model_cfg.kind}, {param_count(params):,} parameters")
    return Model(graphdef, params, make_loss_fn(graphdef))


def pretrain_step(cfg: RunConfig, out: Path, tokenizer, data: RunData, model: Model, log: Log, progress: Progress):
    """Public pretraining (if configured); the central run also reports the public-only model once."""
    if cfg.pretrain.steps <= 0:
        return model, None
    model = model._replace(
        params=_public_pretraining(cfg, out, tokenizer, data, model.loss_fn, model.params, log, progress)
    )
    if cfg.mode != runs.CENTRAL:  # the starting point of every mode, reported once as a baseline
        return model, None
    q = evaluate_model(model.graphdef, model.params, tokenizer, data.heldout, data.word_vocab, cfg.eval.min_targets)
    log(f"public-only model (before any private data): top1 {q['top1']:.3f} top3 {q['top3']:.3f}")
    return model, {k: q[k] for k in ("top1", "top3", "perplexity")}


def train_step(
    cfg: RunConfig, out: Path, tokenizer, data: RunData, model: Model, resume: bool, log: Log, progress: Progress
) -> tuple[Model, dict]:
    """Central training on the baseline users' pooled rows, or federated rounds over the streamed population."""
    t = time.perf_counter()
    if cfg.mode == runs.CENTRAL:
        rows, val = data.central_rows(cfg.central.validation_fraction, cfg.seed)
        planned, history = cfg.central.planned_steps(len(rows)), []
        params, losses = train_central(
            model.loss_fn,
            model.params,
            rows,
            cfg.central,
            cfg.seed,
            callback=lambda i, _: progress("central training", i + 1, planned),
            val_rows=val,
            history=history,
        )
        log(
            f"central: {len(losses)} of {planned} planned steps on {len(rows)} rows of {data.baseline_users} users "
            f"({0 if val is None else len(val)} validation rows){stop_note(history)}, final loss "
            f"{np.mean(losses[-20:]):.3f} ({time.perf_counter() - t:.1f}s)"
        )
        _plot(out, [{"step": i + 1, "loss": x} for i, x in enumerate(losses)], cfg.mode)
        return model._replace(params=params), {"central_training": schedule_report(planned, losses, history)}
    from keyboard_fl.train.federated import resolve_dp, train_federated

    private = cfg.mode == runs.DP_FEDAVG
    dp = resolve_dp(cfg.federated, data.num_train_users, private)
    if private:
        log(
            f"dp: {dp.mechanism.to_dict()['name']} q={dp.sampling_prob:.4g} z={dp.noise_multiplier:.4f} "
            f"C={dp.clip_norm} δ={dp.delta:.0e} N={dp.population} ({dp.participation.scheme} sampling)"
        )
    mlog = MetricsLog(out / runs.HISTORY_FILE, resume)
    quick = first_messages(data.heldout.items(), cfg.federated.eval_messages)

    def on_round(r, record, params_r, ledger):
        progress(f"{cfg.mode} rounds", r, cfg.federated.rounds)
        if r % cfg.federated.eval_every == 0 or r == cfg.federated.rounds:
            q = evaluate_model(model.graphdef, params_r, tokenizer, quick, data.word_vocab, 1)
            record = {**record, "eval_top1": q["top1"], "eval_top3": q["top3"], "eval_perplexity": q["perplexity"]}
            eps = f" ε={record['epsilon']:.2f}" if "epsilon" in record else ""
            log(
                f"round {r}: loss {record['train_loss']:.3f} top1 {q['top1']:.3f} top3 {q['top3']:.3f}{eps} "
                f"({record['seconds']:.2f}s/round)"
            )
        mlog.append(record)

    plan = None
    if cfg.canary_clients is not None:  # Andrew et al. 2024: canary clients with the real users' q and C
        from keyboard_fl.fl.canary_clients import CanaryPlan

        plan = CanaryPlan(cfg.canary_clients, cfg.seed, dp.sampling_prob, cfg.federated.clip_norm)
    params, ledger, _ = train_federated(
        model.loss_fn,
        model.params,
        data.rows,
        cfg.federated,
        dp,
        private=private,
        seed=cfg.seed,
        ckpt_dir=out / runs.CHECKPOINTS_DIR,
        resume=resume,
        on_round=on_round,
        canaries=plan,
        iterates_dir=out / runs.ITERATES_DIR if plan is not None else None,
    )
    _plot(out, mlog.records(), cfg.mode)
    privacy = (
        {**ledger.report(), "clip_norm": dp.clip_norm, "target_epsilon": cfg.federated.target_epsilon}
        if private
        else {}
    )
    return model._replace(params=params), privacy


class MetricsLog:
    """``metrics.jsonl``, the one training log: a JSON record per federated round.

    A resumed run replays the rounds after the checkpoint it actually loaded,
    so its first record drops the records of rounds about to be logged again.
    """

    def __init__(self, path: Path, resume: bool) -> None:
        self.path, self._replaying = path, resume
        if not resume and path.exists():
            path.unlink()

    def append(self, record: dict) -> None:
        if self._replaying and self.path.exists():
            kept = [r for r in self.records() if r["round"] < record["round"]]
            checkpoint.atomic_write_text(self.path, "".join(json.dumps(_jsonable(r)) + "\n" for r in kept))
        self._replaying = False
        with open(self.path, "a") as f:
            f.write(json.dumps(_jsonable(record)) + "\n")

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def evaluate_step(cfg: RunConfig, out: Path, tokenizer: Tokenizer, data: RunData, model: Model, log: Log) -> dict:
    """The model on held-out users and on training users' held-out messages; the n-gram; keystroke savings."""
    log("evaluating …")
    t = time.perf_counter()
    e = cfg.eval
    held = evaluate_model(model.graphdef, model.params, tokenizer, data.heldout, data.word_vocab, e.min_targets)
    own = evaluate_model(model.graphdef, model.params, tokenizer, data.train_user_test, data.word_vocab, e.min_targets)
    ksr_msgs = [m for ms in data.heldout.values() for m in ms][: e.ksr_messages]
    ksr = _ksr(model.graphdef, model.params, tokenizer, ksr_msgs, data.word_vocab) if ksr_msgs else {}
    d = cfg.to_dict()  # the n-gram sees the users (population, corpus, canaries) and the evaluation, not the model
    key = ["ngram/1", cfg.seed, d["population"], cfg.corpus, d["canaries"], d["eval"], data.num_train_users]
    if cfg.phrase_canaries is not None:  # planted phrases are text too (appended only when set: older keys unchanged)
        key.append(d["phrase_canaries"])
    ngram, _ = shared_json(
        out, "ngram", key, lambda: evaluate_ngram_baseline(fit_ngram(data), data, ksr_msgs, e.min_targets)
    )
    log(f"evaluation ({time.perf_counter() - t:.1f}s)")
    return {"heldout_users": held, "train_users_heldout_messages": own, "ngram": ngram, "keystrokes": ksr}


def write_step(
    cfg: RunConfig,
    out: Path,
    data: RunData,
    model: Model,
    quality: dict,
    public_only: dict | None,
    privacy: dict,
    seconds: float,
) -> dict:
    """``metrics.json``: quality, baselines, privacy (ε only for a dp-fedavg run), the data used."""
    held, ngram, ksr = quality["heldout_users"], quality["ngram"], quality["keystrokes"]
    training = {k: v for k, v in privacy.items() if k == "central_training"}  # the central trainer's schedule
    privacy = {k: v for k, v in privacy.items() if k not in training}
    metrics = {
        "mode": cfg.mode,
        "top1": held["top1"],
        "top3": held["top3"],
        "perplexity": held["perplexity"],
        "ngram_top1": ngram["top1"],
        "ngram_top3": ngram["top3"],
        "ngram_ksr": ngram.get("ksr"),
        "ksr": ksr.get("ksr"),
        "params": param_count(model.params),
        **quality,
        "privacy_unit": "user",
        "epsilon": privacy.get("epsilon", float("inf")) if cfg.mode == runs.DP_FEDAVG else float("inf"),
        "seconds": seconds,
        "seed": cfg.seed,
        "public_pretrained": public_only,
        **training,
        "data": {
            "source": "corpus" if cfg.corpus else "simulated",
            "corpus": cfg.corpus,
            "public_corpus": cfg.public_corpus,
            "bad_lines": data.bad_lines,
            "train_users": data.num_train_users,
            "baseline_users": data.baseline_users,
        },
    }
    if privacy:
        metrics.update(privacy)
        metrics["population"] = privacy["population"]
    else:
        metrics["private"] = False
    write_json(out / runs.METRICS_FILE, metrics)
    return metrics


def evaluate_model(
    graphdef, params, tokenizer: Tokenizer, users: dict[str, list[str]], word_vocab, min_targets: int
) -> dict:
    """Whole-word top-1/top-3 (OOV excluded, reported apart), per-user spread, piece perplexity."""
    counter = TopKCounter(vocab=word_vocab)
    ids, msgs = [], []
    for uid, ms in users.items():
        ids += [uid] * len(ms)
        msgs += ms
    preds, nll, n = predict_messages(graphdef, params, tokenizer, msgs, dictionary=word_vocab)  # real words only
    for uid, per in zip(ids, preds, strict=True):
        counter.add(uid, [p for _, p in per], [w for w, _ in per])
    out = counter.summary(min_targets=min_targets)
    out["perplexity"] = perplexity(nll, n) if n else float("nan")
    return out


def fit_ngram(data: RunData):
    """The Kneser–Ney trigram baseline, fitted on the baseline users' training messages."""
    from keyboard_fl.eval.ngram import KneserNeyTrigram

    return KneserNeyTrigram.fit(data.baseline_messages(), vocab=set(data.word_vocab))


def evaluate_ngram_baseline(ngram, data: RunData, ksr_messages: list[str], min_targets: int) -> dict:
    """The n-gram scored like the model: top-k on the held-out users, keystroke savings on ``ksr_messages``."""
    from keyboard_fl.eval.ksr import keystroke_savings
    from keyboard_fl.eval.metrics import evaluate_topk

    out = evaluate_topk(
        lambda ctx: ngram.top_k(ctx, 3), data.heldout, vocab=set(data.word_vocab), min_targets=min_targets
    )
    if ksr_messages:
        out["ksr"] = keystroke_savings(ksr_messages, ngram)["ksr"]
    return out


def _ksr(graphdef, params, tokenizer, messages, dictionary=None) -> dict:
    from keyboard_fl.eval.ksr import keystroke_savings
    from keyboard_fl.suggest import Suggester

    s = Suggester(graphdef, params, tokenizer, dictionary=dictionary)
    res = keystroke_savings(messages, s)
    return {k: res[k] for k in ("ksr", "keystrokes", "characters", "accepted_words")}


def _jsonable(d):
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    if isinstance(d, float) and not math.isfinite(d):
        return None if math.isnan(d) else ("inf" if d > 0 else "-inf")
    if isinstance(d, (np.floating, np.integer)):
        return _jsonable(d.item())
    return d


def write_json(path: Path, obj: Any) -> None:
    checkpoint.atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")


def pretrained_cache_dir(cfg: RunConfig, tokenizer: Tokenizer, out: Path) -> Path:
    """Where the public-pretrained start of run ``out`` is cached (shared by sibling runs)."""
    import hashlib

    key = hashlib.sha256(
        json.dumps(
            [
                "rng/1",
                cfg.seed,
                cfg.to_dict()["population"],
                cfg.corpus,
                cfg.public_corpus,
                cfg.to_dict()["model"],
                cfg.seq_len,
                cfg.to_dict()["pretrain"],
            ],
            sort_keys=True,
        ).encode()
        + tokenizer.model_proto
    ).hexdigest()[:16]
    return Path(out).parent / runs.PRETRAINED_DIR / key


def _public_pretraining(
    cfg: RunConfig, out: Path, tokenizer, data: RunData, loss_fn, params, log: Log, progress: Progress
):
    """Centralized pretraining on the public split only (DESIGN.md §3), shared between runs.

    Its result is a pure function of the seed, the population, the tokenizer,
    the model and the pretraining config, so it is cached under
    ``<out>/../.pretrained/<hash>`` and reused by sibling runs (the main job's three).
    """
    cache = pretrained_cache_dir(cfg, tokenizer, out)
    key = cache.name
    found = checkpoint.load_latest(cache, params)
    if found is not None:
        log(f"public pretraining: reusing {cache}")
        return found[1]
    t = time.perf_counter()
    planned, history = cfg.pretrain.planned_steps(len(data.public_rows)), []
    params, losses = train_central(
        loss_fn,
        params,
        data.public_rows,
        cfg.pretrain,
        cfg.seed,
        stream=Stream.PRETRAIN,
        callback=lambda i, _: progress("public pretraining", i + 1, planned),
        val_rows=data.public_val_rows,
        history=history,
    )
    checkpoint.save(cache, len(losses), params, {"key": key, **schedule_report(planned, losses, history)}, keep=1)
    log(
        f"public pretraining: {len(losses)} of {planned} planned steps on {len(data.public_rows)} public rows"
        f"{stop_note(history)}, loss {np.mean(losses[-20:]):.3f} ({time.perf_counter() - t:.1f}s)"
    )
    return params


def _plot(out: Path, history: list[dict], mode: str) -> None:
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    key = "step" if mode == runs.CENTRAL else "round"
    lk = "loss" if mode == runs.CENTRAL else "train_loss"
    ax.plot([h[key] for h in history], [h[lk] for h in history], lw=1)
    ax.set_xlabel(key)
    ax.set_ylabel("training loss (nats / piece)")
    ax.set_title(f"{mode} learning curve")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / runs.CURVE_FILE, dpi=110)
    plt.close(fig)
