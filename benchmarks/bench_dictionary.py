"""What the dictionary filter changes: top-1/top-3 and KSR with and without it, on finished runs.

For each run: whole-word next-word top-1/top-3 over its held-out users (as
``metrics.json``: OOV targets excluded) and keystroke savings on its KSR
messages, once with the strip as it was (any piece spelling that forms a word
pattern) and once filtered through the run's public word list
(:mod:`keyboard_fl.dictionary`), plus how many suggestions were non-words.

Usage::

    .venv/bin/python benchmarks/bench_dictionary.py RUN_DIR [RUN_DIR ...] [--out FILE]

Writes ``benchmarks/results/dictionary_filter.json`` by default.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(run_dir: Path) -> dict:
    from keyboard_fl.config import RunConfig
    from keyboard_fl.dictionary import run_dictionary
    from keyboard_fl.eval.ksr import keystroke_savings
    from keyboard_fl.eval.metrics import TopKCounter
    from keyboard_fl.eval.neural import predict_messages
    from keyboard_fl.models_registry import load_suggester
    from keyboard_fl.suggest import Suggester
    from keyboard_fl.train.run import _ksr_messages, prepare

    cfg = RunConfig.load(run_dir / "config.json")
    tok, data = prepare(cfg, run_dir, lambda s: None)
    base, _ = load_suggester(run_dir)
    words = run_dictionary(run_dir)
    assert set(words.public) == set(data.word_vocab), "the dictionary is the run's evaluation vocabulary"
    ids, msgs = [], []
    for uid, ms in data.heldout.items():
        ids += [uid] * len(ms)
        msgs += ms
    ksr_msgs = _ksr_messages(data, cfg.eval.ksr_messages)
    out = {"run": str(run_dir), "mode": cfg.mode, "heldout_messages": len(msgs), "ksr_messages": len(ksr_msgs)}
    for name, dictionary in (("unfiltered", None), ("dictionary", words)):
        preds, _, _ = predict_messages(base.graphdef, base.params, tok, msgs, dictionary=dictionary)
        counter = TopKCounter(vocab=data.word_vocab)
        shown = nonwords = 0
        for uid, per in zip(ids, preds, strict=True):
            counter.add(uid, [p for _, p in per], [w for w, _ in per])
            for _, p in per:
                shown += len(p)
                nonwords += sum(w not in words for w in p)
        s = counter.summary(min_targets=cfg.eval.min_targets)
        sugg = Suggester(base.graphdef, base.params, tok, dictionary=dictionary)
        k = keystroke_savings(ksr_msgs, sugg.suggest) if ksr_msgs else {"ksr": None}
        out[name] = {
            "top1": s["top1"],
            "top3": s["top3"],
            "targets": s["targets"],
            "ksr": k["ksr"],
            "suggestions": shown,
            "non_words": nonwords,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/dictionary_filter.json")
    a = ap.parse_args()
    results = [measure(r) for r in a.runs]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"runs": results}, indent=2) + "\n")
    for r in results:
        u, d = r["unfiltered"], r["dictionary"]
        print(
            f"{r['run']}: top-1 {u['top1']:.3f}→{d['top1']:.3f} top-3 {u['top3']:.3f}→{d['top3']:.3f} "
            f"KSR {u['ksr']}→{d['ksr']} "
            f"non-words {u['non_words']}/{u['suggestions']}→{d['non_words']}/{d['suggestions']}"
        )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
