"""One training run, end to end: data → tokenizer → model → train → evaluate → files.

A run directory holds everything needed to use, audit or resume the run::

    config.json        the RunConfig (resuming checks it is unchanged)
    tokenizer.model    SentencePiece, trained on the public split only
    checkpoints/       atomic checkpoints (federated modes)
    model/             final parameters (a verified checkpoint)
    metrics.jsonl      quick evaluations during training (one JSON per line)
    metrics.json       final metrics: quality, baselines, privacy
    learning_curve.png
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import jax
import numpy as np

from keyboard_fl import checkpoint
from keyboard_fl.config import RunConfig
from keyboard_fl.data import Population, UserSource
from keyboard_fl.dictionary import public_vocabulary
from keyboard_fl.eval.metrics import TopKCounter, perplexity
from keyboard_fl.eval.neural import predict_messages
from keyboard_fl.models import init_params, make_loss_fn, param_count
from keyboard_fl.tokenizer import Tokenizer, train_tokenizer
from keyboard_fl.train.central import train_central
from keyboard_fl.train.examples import UserRows, user_rows

Log = Callable[[str], None]
Progress = Callable[[str, int, int], None]  # (phase, done, total): drives the CLI's progress bar


def _no_progress(phase: str, done: int, total: int) -> None:
    pass
WORD_VOCAB_SIZE = 10_000  # evaluation word vocabulary (from the public split), as the 10k of Gboard / Stack Overflow


def first_messages(users: Iterable[tuple[str, Sequence[str]]], budget: int) -> dict[str, list[str]]:
    """``{user_id: messages}`` taking users in order until ``budget`` messages are taken (users without any skipped)."""
    out: dict[str, list[str]] = {}
    for uid, msgs in users:
        if budget <= 0:
            break
        if msgs:
            out[uid] = list(msgs[:budget])
            budget -= len(out[uid])
    return out


class RunData:
    """Tokenized training rows and evaluation sets of a run (no text leaves here except to eval)."""

    def __init__(self, cfg: RunConfig, source: UserSource, tokenizer: Tokenizer):
        e = cfg.eval
        public = [m for u in source.users("public") for m in u.train]
        self.word_vocab = frozenset(public_vocabulary(public, WORD_VOCAB_SIZE))  # also the strip's dictionary
        self.public_rows = np.concatenate(
            [user_rows(tokenizer, u.train, cfg.seq_len) for u in source.users("public")] or [np.zeros((0, cfg.seq_len + 1), np.int32)]
        ) if cfg.pretrain.steps > 0 else None
        train_users = list(source.users("train"))
        self.rows = UserRows([user_rows(tokenizer, u.train, cfg.seq_len) for u in train_users])
        self.train_messages = [m for u in train_users for m in u.train]
        self.train_user_test = first_messages(((u.user_id, u.test) for u in train_users), e.max_train_user_messages)
        self.heldout: dict[str, list[str]] = {}
        for u in source.users("heldout"):
            if len(self.heldout) >= e.max_users:
                break
            if u.test:
                self.heldout[u.user_id] = list(u.test[: e.max_messages_per_user])
        self.num_train_users = len(train_users)


def evaluate_model(graphdef, params, tokenizer: Tokenizer, users: dict[str, list[str]], word_vocab, min_targets: int) -> dict:
    """Whole-word top-1/top-3 (OOV excluded, reported apart), per-user spread, piece perplexity."""
    counter = TopKCounter(vocab=word_vocab)
    ids, msgs = [], []
    for uid, ms in users.items():
        ids += [uid] * len(ms)
        msgs += ms
    preds, nll, n = predict_messages(graphdef, params, tokenizer, msgs, dictionary=word_vocab)  # real words only
    for uid, per in zip(ids, preds):
        counter.add(uid, [p for _, p in per], [w for w, _ in per])
    out = counter.summary(min_targets=min_targets)
    out["perplexity"] = perplexity(nll, n) if n else float("nan")
    return out


def evaluate_ngram_baseline(data: RunData, min_targets: int) -> dict:
    """The Kneser–Ney trigram on the same training messages, scored like the model (plus its fitted model)."""
    from keyboard_fl.eval.metrics import evaluate_topk
    from keyboard_fl.eval.ngram import KneserNeyTrigram

    vocab = set(data.word_vocab)
    model = KneserNeyTrigram.fit(data.train_messages, vocab=vocab)
    out = evaluate_topk(lambda ctx: model.top_k(ctx, 3), data.heldout, vocab=vocab, min_targets=min_targets)
    out["_model"] = model
    return out


def _ksr(graphdef, params, tokenizer, messages, dictionary=None) -> dict:
    from keyboard_fl.eval.ksr import keystroke_savings
    from keyboard_fl.suggest import Suggester

    s = Suggester(graphdef, params, tokenizer, dictionary=dictionary)
    res = keystroke_savings(messages, s.suggest)
    return {k: res[k] for k in ("ksr", "keystrokes", "characters", "accepted_words")}


def _ksr_messages(data: RunData, n: int) -> list[str]:
    return [m for ms in data.heldout.values() for m in ms][:n]


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


def prepare(cfg: RunConfig, out: Path, log: Log, source: UserSource | None = None) -> tuple[Tokenizer, RunData]:
    if source is None and cfg.corpus:
        from keyboard_fl.data import ReaderConfig, SplitConfig
        from keyboard_fl.data.materialize import open_source

        source = open_source(cfg.corpus, ReaderConfig(split=SplitConfig(seed=cfg.seed), skip_bad_lines=cfg.skip_bad_lines))
    source = source or Population(cfg.population)
    if cfg.canaries is not None:
        from keyboard_fl.privacy.canaries import CanarySource, draw_canaries

        canaries, _ = draw_canaries(cfg.canaries, [u.user_id for u in source.users("train")])
        source = CanarySource(source, canaries, cfg.canaries.prefix, cfg.canaries.seed)
        log(f"canaries: {len(canaries)} secrets planted in {sum(len(c.user_ids) for c in canaries)} training users")
    tok_path = out / "tokenizer.model"
    if tok_path.exists():
        tokenizer = Tokenizer.load(tok_path)
    else:
        t = time.perf_counter()
        tokenizer = train_tokenizer((m for u in source.users("public") for m in u.train), cfg.tokenizer)
        tokenizer.save(tok_path)
        log(f"tokenizer: {tokenizer.vocab_size} pieces from the public split ({time.perf_counter() - t:.1f}s)")
    t = time.perf_counter()
    data = RunData(cfg, source, tokenizer)
    log(
        f"data: {data.num_train_users} training users, {len(data.rows.rows)} rows; "
        f"eval: {len(data.heldout)} held-out users, {sum(map(len, data.train_user_test.values()))} held-out messages "
        f"of training users ({time.perf_counter() - t:.1f}s)"
    )
    report = getattr(source, "report", None)
    if report is not None and report.total:
        log(f"corpus: skipped {report.total} bad lines: {report.as_dict()}")
        data.bad_lines = report.as_dict()
    return tokenizer, data


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
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.json"
    if resume and cfg_path.exists():
        saved = RunConfig.load(cfg_path)
        if saved != cfg:
            log(f"resuming with the run's saved configuration from {cfg_path}")
        cfg = saved
    elif not resume and (out / "metrics.json").exists():
        raise FileExistsError(f"{out} already holds a finished run; pass --resume or choose another --out")
    checkpoint.atomic_write_text(cfg_path, cfg.to_json() + "\n")
    t_start = time.perf_counter()
    tokenizer, data = prepare(cfg, out, log, source)
    model_cfg = type(cfg.model)(**{**cfg.model.__dict__, "vocab_size": tokenizer.vocab_size})
    root = jax.random.key(cfg.seed)
    graphdef, params = init_params(model_cfg, jax.random.fold_in(root, 1))
    loss_fn = make_loss_fn(graphdef)
    log(f"model: {model_cfg.kind}, {param_count(params):,} parameters")

    jsonl = out / "metrics.jsonl"
    quick = first_messages(data.heldout.items(), cfg.federated.eval_messages)

    privacy: dict[str, Any] = {}
    history: list[dict] = []
    public_only = None
    if cfg.pretrain.steps > 0:
        params = _public_pretraining(cfg, out, tokenizer, data, loss_fn, params, log, progress)
        if cfg.mode == "central":  # the starting point of every mode, reported once as a baseline
            public_only = evaluate_model(graphdef, params, tokenizer, data.heldout, data.word_vocab, cfg.eval.min_targets)
            log(f"public-only model (before any private data): top1 {public_only['top1']:.3f} top3 {public_only['top3']:.3f}")
    if cfg.mode == "central":
        t = time.perf_counter()
        params, losses = train_central(
            loss_fn, params, data.rows.rows, cfg.central, cfg.seed,
            callback=lambda i, _: progress("central training", i + 1, cfg.central.steps),
        )
        history = [{"step": i + 1, "loss": l} for i, l in enumerate(losses)]
        log(f"central: {cfg.central.steps} steps, final loss {np.mean(losses[-20:]):.3f} ({time.perf_counter() - t:.1f}s)")
    else:
        from keyboard_fl.train.federated import resolve_dp, train_federated

        private = cfg.mode == "dp-fedavg"
        dp = resolve_dp(cfg.federated, len(data.rows), private)
        if private:
            log(f"dp: {dp.mechanism.to_dict()['name']} q={dp.sampling_prob:.4g} z={dp.noise_multiplier:.4f} "
                f"C={dp.clip_norm} δ={dp.delta:.0e} N={dp.population} ({dp.participation.scheme} sampling)")
        if not resume and jsonl.exists():
            jsonl.unlink()
        replayed = [resume]  # a resumed run replays rounds after the checkpoint it actually loaded

        def on_round(r, record, params_r, ledger):
            if replayed[0] and jsonl.exists():  # drop records of rounds about to be logged again
                kept = [l for l in jsonl.read_text().splitlines() if l.strip() and json.loads(l)["round"] < r]
                checkpoint.atomic_write_text(jsonl, "".join(l + "\n" for l in kept))
            replayed[0] = False
            progress(f"{cfg.mode} rounds", r, cfg.federated.rounds)
            if r % cfg.federated.eval_every == 0 or r == cfg.federated.rounds:
                q = evaluate_model(graphdef, params_r, tokenizer, quick, data.word_vocab, 1)
                rec = {**record, "eval_top1": q["top1"], "eval_top3": q["top3"], "eval_perplexity": q["perplexity"]}
                with open(jsonl, "a") as f:
                    f.write(json.dumps(_jsonable(rec)) + "\n")
                eps = f" ε={record['epsilon']:.2f}" if "epsilon" in record else ""
                log(f"round {r}: loss {record['train_loss']:.3f} top1 {q['top1']:.3f} top3 {q['top3']:.3f}{eps} ({record['seconds']:.2f}s/round)")

        params, ledger, history = train_federated(
            loss_fn, params, data.rows, cfg.federated, dp, private=private, seed=cfg.seed,
            ckpt_dir=out / "checkpoints", resume=resume, on_round=on_round,
        )
        if private:
            privacy = {**ledger.report(), "clip_norm": dp.clip_norm, "target_epsilon": cfg.federated.target_epsilon}
    checkpoint.save(out / "model", 0, params, {"config": cfg.to_dict(), "vocab_size": tokenizer.vocab_size}, keep=1)

    log("evaluating …")
    t = time.perf_counter()
    e = cfg.eval
    held = evaluate_model(graphdef, params, tokenizer, data.heldout, data.word_vocab, e.min_targets)
    own = evaluate_model(graphdef, params, tokenizer, data.train_user_test, data.word_vocab, e.min_targets)
    ngram = evaluate_ngram_baseline(data, e.min_targets)
    ksr_msgs = _ksr_messages(data, e.ksr_messages)
    ksr = _ksr(graphdef, params, tokenizer, ksr_msgs, data.word_vocab) if ksr_msgs else {}
    if ksr_msgs:
        from keyboard_fl.eval.ksr import keystroke_savings

        ngram["ksr"] = keystroke_savings(ksr_msgs, ngram.pop("_model").suggest)["ksr"]
    ngram.pop("_model", None)
    log(f"evaluation ({time.perf_counter() - t:.1f}s)")
    metrics = {
        "mode": cfg.mode,
        "top1": held["top1"],
        "top3": held["top3"],
        "perplexity": held["perplexity"],
        "ngram_top1": ngram["top1"],
        "ngram_top3": ngram["top3"],
        "ngram_ksr": ngram.get("ksr"),
        "ksr": ksr.get("ksr"),
        "params": param_count(params),
        "heldout_users": held,
        "train_users_heldout_messages": own,
        "ngram": ngram,
        "keystrokes": ksr,
        "privacy_unit": "user",
        "epsilon": privacy.get("epsilon", float("inf")) if cfg.mode == "dp-fedavg" else float("inf"),
        "seconds": time.perf_counter() - t_start,
        "seed": cfg.seed,
        "public_pretrained": None if public_only is None else {k: public_only[k] for k in ("top1", "top3", "perplexity")},
        "data": {"source": "corpus" if cfg.corpus else "simulated", "bad_lines": getattr(data, "bad_lines", None)},
    }
    if privacy:
        metrics.update(privacy)
        metrics["population"] = privacy["population"]
    else:
        metrics["private"] = False
    write_json(out / "metrics.json", metrics)
    _plot(out, history, cfg.mode)
    return metrics


def pretrained_cache_dir(cfg: RunConfig, tokenizer: Tokenizer, out: Path) -> Path:
    """Where the public-pretrained start of run ``out`` is cached (shared by sibling runs)."""
    import hashlib

    key = hashlib.sha256(
        json.dumps([cfg.seed, cfg.to_dict()["population"], cfg.corpus, cfg.to_dict()["model"], cfg.seq_len,
                    cfg.to_dict()["pretrain"]], sort_keys=True).encode()
        + tokenizer.model_proto
    ).hexdigest()[:16]
    return Path(out).parent / ".pretrained" / key


def _public_pretraining(cfg: RunConfig, out: Path, tokenizer, data: RunData, loss_fn, params, log: Log, progress: Progress):
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
    params, losses = train_central(
        loss_fn, params, data.public_rows, cfg.pretrain, cfg.seed + 7919,
        callback=lambda i, _: progress("public pretraining", i + 1, cfg.pretrain.steps),
    )
    checkpoint.save(cache, cfg.pretrain.steps, params, {"key": key}, keep=1)
    log(f"public pretraining: {cfg.pretrain.steps} steps on {len(data.public_rows)} public rows, "
        f"loss {np.mean(losses[-20:]):.3f} ({time.perf_counter() - t:.1f}s)")
    return params


def _plot(out: Path, history: list[dict], mode: str) -> None:
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    key = "step" if mode == "central" else "round"
    lk = "loss" if mode == "central" else "train_loss"
    ax.plot([h[key] for h in history], [h[lk] for h in history], lw=1)
    ax.set_xlabel(key)
    ax.set_ylabel("training loss (nats / piece)")
    ax.set_title(f"{mode} learning curve")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "learning_curve.png", dpi=110)
    plt.close(fig)
