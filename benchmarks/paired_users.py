"""Is a run's model better than the Kneser–Ney trigram on held-out users, beyond chance?

Re-scores a finished run's model and the run's trigram baseline on the same
held-out users (the run's own evaluation set) and bootstraps over *users*
(targets of one user are not independent): the top-1 / top-3 difference, model
minus trigram, with a 95% interval and the share of resamples in which the
model wins.

    .venv/bin/python benchmarks/paired_users.py runs/chitchat/central [--resamples 2000]

Writes ``benchmarks/results/paired_users_<run name>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from keyboard_fl import checkpoint, runs
from keyboard_fl.config import RunConfig
from keyboard_fl.eval.metrics import KS, TopKCounter
from keyboard_fl.eval.neural import predict_messages
from keyboard_fl.models import init_params
from keyboard_fl.text import targets as word_targets
from keyboard_fl.text import words
from keyboard_fl.train.run import fit_ngram, prepare

RESULTS = Path(__file__).parent / "results"


def model_counts(run_dir: Path, cfg: RunConfig, tokenizer, data) -> TopKCounter:
    model_cfg = dataclasses.replace(cfg.model, vocab_size=tokenizer.vocab_size)
    graphdef, template = init_params(model_cfg, jax.random.key(0))
    params = checkpoint.load_latest(run_dir / runs.MODEL_DIR, template)[1]
    ids = [uid for uid, msgs in data.heldout.items() for _ in msgs]
    msgs = [m for ms in data.heldout.values() for m in ms]
    preds, _, _ = predict_messages(graphdef, params, tokenizer, msgs, dictionary=data.word_vocab)  # as evaluate_model
    counter = TopKCounter(vocab=data.word_vocab)
    for uid, per in zip(ids, preds, strict=True):
        counter.add(uid, [p for _, p in per], [w for w, _ in per])
    return counter


def ngram_counts(data) -> TopKCounter:
    ngram = fit_ngram(data)
    counter = TopKCounter(vocab=data.word_vocab)
    for uid, msgs in data.heldout.items():
        for m in msgs:
            ws, ts = words(m), list(word_targets(m))
            preds = [ngram.top_k(ws[: t.index], 3) if t.word in data.word_vocab else () for t in ts]
            counter.add(uid, preds, [t.word for t in ts])
    return counter


def paired_bootstrap(a: TopKCounter, b: TopKCounter, resamples: int, seed: int = 0) -> dict:
    users = [u for u in a.per_user if a.per_user[u].targets > 0]
    n = np.array([a.per_user[u].targets for u in users], float)
    out = {"users": len(users), "targets": int(n.sum())}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(users), (resamples, len(users)))
    for k in KS:
        ha = np.array([a.per_user[u].hits[k] for u in users], float)
        hb = np.array([b.per_user[u].hits[k] for u in users], float)
        diff = (ha[idx].sum(1) - hb[idx].sum(1)) / n[idx].sum(1)
        out[f"top{k}"] = {
            "model": ha.sum() / n.sum(),
            "ngram": hb.sum() / n.sum(),
            "difference": (ha.sum() - hb.sum()) / n.sum(),
            "ci95": [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))],
            "model_wins_share": float((diff > 0).mean()),
            "users_model_better": int((ha / n > hb / n).sum()),
            "users_ngram_better": int((ha / n < hb / n).sum()),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args()
    cfg = RunConfig.load(args.run / runs.CONFIG_FILE)
    tokenizer, data = prepare(cfg, args.run, lambda s: None)
    res = paired_bootstrap(model_counts(args.run, cfg, tokenizer, data), ngram_counts(data), args.resamples)
    res = {"run": str(args.run), "resamples": args.resamples, **res}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"paired_users_{args.run.parent.name}_{args.run.name}.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
