"""Difficulty calibration: a count-based word trigram with simple backoff.

Not the project's n-gram baseline (that lives in ``keyboard_fl.eval``); a quick
yardstick to tune the simulator so that whole-word top-1 lands where real
keyboards are (n-gram 13%, Gboard 16.4%; DESIGN.md §2)::

    .venv/bin/python -m keyboard_fl.data.calibrate --train-users 2000 --heldout-users 500
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from collections.abc import Iterable

from ..text import targets, words
from .population import Population, PopulationConfig
from .splits import UserSource

BOS = "<s>"


class TrigramPredictor:
    """Top-k next word: trigram candidates, then bigram, then unigram (backoff by filling)."""

    def __init__(self) -> None:
        self.tri: dict[tuple[str, str], Counter] = defaultdict(Counter)
        self.bi: dict[str, Counter] = defaultdict(Counter)
        self.uni: Counter = Counter()
        self._cache: dict[tuple[str, str, int], list[str]] = {}

    def fit(self, messages: Iterable[str]) -> TrigramPredictor:
        for m in messages:
            ws = words(m)
            a, b = BOS, BOS
            for w in ws:
                self.tri[(a, b)][w] += 1
                self.bi[b][w] += 1
                self.uni[w] += 1
                a, b = b, w
        self._cache.clear()
        return self

    def predict(self, prev2: str, prev1: str, k: int = 3) -> list[str]:
        key = (prev2, prev1, k)
        got = self._cache.get(key)
        if got is not None:
            return got
        out: list[str] = []
        for counter in (self.tri.get((prev2, prev1)), self.bi.get(prev1), self.uni):
            if not counter:
                continue
            for w, _ in counter.most_common(k + len(out)):
                if w not in out:
                    out.append(w)
                if len(out) == k:
                    break
            if len(out) == k:
                break
        self._cache[key] = out
        return out


def evaluate(model: TrigramPredictor, messages: Iterable[str], k: int = 3) -> dict:
    """Whole-word top-1/top-k over ``text.targets`` (OOV targets count as misses)."""
    n = hit1 = hitk = oov = 0
    for m in messages:
        ws = words(m)
        for t in targets(m):
            i = t.index
            p2 = ws[i - 2] if i >= 2 else BOS
            p1 = ws[i - 1] if i >= 1 else BOS
            pred = model.predict(p2, p1, k)
            n += 1
            oov += t.word not in model.uni
            hit1 += bool(pred) and pred[0] == t.word
            hitk += t.word in pred
    return {"targets": n, "top1": hit1 / max(n, 1), f"top{k}": hitk / max(n, 1), "oov_rate": oov / max(n, 1)}


def calibrate(source: UserSource, max_train_users: int | None = None, max_eval_users: int | None = None) -> dict:
    """Train on train users' train messages; evaluate on held-out users and on train users' test parts."""
    model = TrigramPredictor()
    test_msgs: list[str] = []
    for i, u in enumerate(source.users("train")):
        if max_train_users is not None and i >= max_train_users:
            break
        model.fit(u.train)
        test_msgs.extend(u.test)
    held: list[str] = []
    for i, u in enumerate(source.users("heldout")):
        if max_eval_users is not None and i >= max_eval_users:
            break
        held.extend(u.test)
    return {
        "heldout_users": evaluate(model, held),
        "train_users_test": evaluate(model, test_msgs),
        "vocab": len(model.uni),
        "train_tokens": sum(model.uni.values()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-users", type=int, default=2000)
    ap.add_argument("--heldout-users", type=int, default=500)
    a = ap.parse_args()
    pop = Population(
        PopulationConfig(
            seed=a.seed, num_train_users=a.train_users, num_heldout_users=a.heldout_users, num_public_users=0
        )
    )
    print(json.dumps(calibrate(pop), indent=2))


if __name__ == "__main__":
    main()
