"""Empirical-privacy audit of a run trained with canary clients: ε_est and ε_lower beside the accounted ε.

A run trained with ``canary_clients`` (:mod:`keyboard_fl.fl.canary_clients`)
saved its released parameters after every round (``canary_iterates/``). Each
canary direction, inserted or never inserted, is scored by its cosine with

* the final model delta (last iterate − first): the "final model" statistic;
* each round's delta, taking the largest over rounds: the "all iterates" statistic.

From those scores: Andrew et al. (ICLR 2024)'s ε_est (Gaussian fits) and
Steinke, Nasr, Jagielski (2023)'s one-run lower bound ε_lower at the stated
confidence (:mod:`keyboard_fl.privacy.empirical`). The accounted ε (the
ledger's, ∞ for FedAvg) is reported beside them.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from keyboard_fl import runs
from keyboard_fl.privacy.empirical import epsilon_estimate, one_run_bound

__all__ = ["audit_scores", "empirical_audit_run", "load_iterates"]


def load_iterates(run_dir: str | Path, rounds: int) -> np.ndarray:
    """The flattened released parameters ``[rounds + 1, d]`` (row 0: the start); names the missing file."""
    d = Path(run_dir) / runs.ITERATES_DIR
    rows = []
    for r in range(rounds + 1):
        path = d / f"iterate-{r:06d}.npy"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing (was the run trained with canary clients to the end?)")
        rows.append(np.load(path))
    return np.stack(rows)


def audit_scores(cosines: np.ndarray, inserted: np.ndarray, held_out: np.ndarray, delta: float, cfg) -> dict:
    """ε_est and ε_lower from canary cosines ``[count, 1 + T]`` (column 0: final delta; then each round)."""
    final = cosines[:, 0]
    each = cosines[:, 1:].max(axis=1) if cosines.shape[1] > 1 else final
    out = {}
    for name, s in (("final_model", final), ("all_iterates", each)):
        est = epsilon_estimate(s[inserted], s[held_out], delta)
        bound = one_run_bound(s[inserted], s[held_out], delta, confidence=cfg.confidence, fpr=cfg.fpr)
        out[name] = {
            "epsilon_est": est["epsilon"],
            **{f"fit_{k}": v for k, v in est.items() if k not in ("epsilon", "delta")},
        }
        out[name].update(bound)
    return out


def _canary_ids_sampled(plan, rounds: int) -> np.ndarray:
    """Inserted canaries that some round actually sampled (the draw is replayed from the run's seed)."""
    seen = set()
    for r in range(rounds):
        s = plan.slots(r)
        seen.update(np.asarray(s.ids)[np.asarray(s.mask)].tolist())
    return np.array(sorted(seen), np.int64)


def _like(cfg, run_dir: Path):
    """The model's parameter pytree (shapes and leaf order of training), initialised, never trained."""
    import jax

    from keyboard_fl.models import init_params
    from keyboard_fl.tokenizer import Tokenizer

    tok = Tokenizer.load(run_dir / runs.TOKENIZER_FILE)
    _, params = init_params(dataclasses.replace(cfg.model, vocab_size=tok.vocab_size), jax.random.key(0))
    return params


def empirical_audit_run(run_dir: str | Path) -> dict:
    """Audit a finished run trained with canary clients; the result goes to ``metrics.json`` under ``audit.empirical``."""
    from keyboard_fl.config import RunConfig
    from keyboard_fl.fl.canary_clients import CanaryPlan, canary_cosines
    from keyboard_fl.privacy import default_delta
    from keyboard_fl.train.run import write_json

    run_dir = Path(run_dir)
    cfg = RunConfig.load(run_dir / runs.CONFIG_FILE)
    cc = cfg.canary_clients
    if cc is None:
        raise ValueError(f"{run_dir} was trained without canary clients; train with --canary-clients N to audit it")
    metrics = runs.load_metrics(run_dir)
    n = metrics["data"]["train_users"]
    delta = float(metrics.get("delta") or default_delta(n))
    rounds = cfg.federated.rounds
    iterates = load_iterates(run_dir, rounds)
    deltas = np.concatenate([iterates[-1:] - iterates[:1], np.diff(iterates, axis=0)])
    plan = CanaryPlan(cc, cfg.seed, cfg.federated.sampling_prob(n), cfg.federated.clip_norm)
    cos = canary_cosines(cfg.seed, cc.count, _like(cfg, run_dir), deltas)
    result = {
        "accounted_epsilon": float(metrics.get("epsilon", math.inf)),
        "delta": delta,
        "rounds": rounds,
        "canaries": cc.count,
        "inserted": len(plan.inserted),
        "inserted_sampled": int(_canary_ids_sampled(plan, rounds).size),
        "dimension": int(iterates.shape[1]),
        "null_std_theory": float(iterates.shape[1] ** -0.5),
        **audit_scores(cos, plan.inserted, plan.held_out, delta, cc),
        "note": "canary clients: random unit directions x C, Poisson-sampled with the real users' q, clipped and "
        "noised with them (Andrew et al. 2024); epsilon_est from Gaussian fits of inserted vs never-inserted "
        "cosines; epsilon_lower: one-run bound (Steinke et al. 2023, jax-privacy CanaryScoreAuditor) at "
        "'confidence'",
    }
    audit = metrics.get("audit") if isinstance(metrics.get("audit"), dict) else {}
    metrics["audit"] = {**audit, "empirical": result}
    write_json(run_dir / runs.METRICS_FILE, metrics)
    return result
