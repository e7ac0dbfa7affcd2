"""Empirical-privacy audit of a run trained with canary clients: ε_est and ε_lower beside the accounted ε.

A run trained with ``canary_clients`` (:mod:`keyboard_fl.fl.canary_clients`)
saved its released parameters after every round (``canary_iterates/``). Each
canary direction, inserted or never inserted, is scored by its cosine with

* the final model delta (last iterate − first): the "final model" statistic;
* each round's delta, taking the largest over rounds: the "all iterates" statistic;
* given its schedule: the deltas of the rounds it was (or, never inserted,
  would have been) sampled in, ``Σ_t cos_t / √k`` over its ``k`` rounds.

From those scores: Andrew et al. (ICLR 2024)'s ε_est (Gaussian fits) and
Steinke, Nasr, Jagielski (2023)'s one-run lower bound ε_lower at the stated
confidence (:mod:`keyboard_fl.privacy.empirical`), each beside the ε that
bounds it. The first two are schedule-blind: a canary is a Poisson-sampled
client, bounded by the accounted ε (the ledger's, ∞ for FedAvg). With q small
most inserted canaries are never sampled and look exactly like held-out ones,
so blind statistics can show little. The schedule (drawn independently of the
in/out coins, :meth:`~keyboard_fl.fl.canary_clients.CanaryPlan.schedules`)
lets the auditor score only the canaries that can differ, and then sampling
amplifies nothing: that bound is the unamplified Gaussian mechanism over the
largest number of rounds any scored canary has
(:func:`~keyboard_fl.privacy.empirical.unamplified_epsilon`), known exactly for
DP-FedAvg (adaptive clipping: its sum's multiplier); ``None`` for
correlated-noise mechanisms.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from keyboard_fl import runs
from keyboard_fl.privacy.empirical import epsilon_estimate, one_run_bound, unamplified_epsilon

__all__ = [
    "audit_canaries",
    "audit_scores",
    "empirical_audit_run",
    "load_iterates",
    "round_noise_multiplier",
    "schedule_scores",
    "score_audit",
]


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


def score_audit(ins: np.ndarray, outs: np.ndarray, delta: float, cfg) -> dict:
    """ε_est (Gaussian fits, ``None`` with fewer than 2 scores a side) and the one-run bound."""
    out = {"epsilon_est": None}
    if ins.size >= 2 and outs.size >= 2:
        est = epsilon_estimate(ins, outs, delta)
        out = {
            "epsilon_est": est["epsilon"],
            **{f"fit_{k}": v for k, v in est.items() if k not in ("epsilon", "delta")},
        }
    return {**out, **one_run_bound(ins, outs, delta, confidence=cfg.confidence, fpr=cfg.fpr)}


def audit_scores(cosines: np.ndarray, inserted: np.ndarray, held_out: np.ndarray, delta: float, cfg) -> dict:
    """ε_est and ε_lower from canary cosines ``[count, 1 + T]`` (column 0: final delta; then each round)."""
    final = cosines[:, 0]
    each = cosines[:, 1:].max(axis=1) if cosines.shape[1] > 1 else final
    return {
        name: score_audit(s[inserted], s[held_out], delta, cfg)
        for name, s in (("final_model", final), ("all_iterates", each))
    }


def schedule_scores(round_cosines: np.ndarray, schedule: np.ndarray) -> np.ndarray:
    """``Σ_t cos_t / √k`` over each canary's ``k ≥ 1`` scheduled rounds (``[n, T]`` both).

    A never-inserted direction's cosine with any fixed delta has the same null
    law each round (≈ N(0, 1/d)), so the scaled sum has it whatever ``k``.
    """
    k = schedule.sum(axis=1)
    if np.any(k == 0):
        raise ValueError("every scored canary needs at least one scheduled round")
    return (round_cosines * schedule).sum(axis=1) / np.sqrt(k)


def round_noise_multiplier(metrics: dict) -> float | None:
    """The multiplier of the noise on each round's sum, independent across rounds; 0 without DP; None if unknown.

    DP-FedAvg: ``z``. Adaptive clipping: the sum's ``z_sum`` (the count's noise
    does not involve canary clients). Correlated noise (DP-FTRL): None.
    """
    if not runs.is_private(metrics):
        return 0.0
    mech = metrics.get("mechanism") or {}
    if mech.get("name") == "adaptive-clipping" and (mech.get("base") or {}).get("name") == "dp-fedavg":
        return float(mech["sum_noise_multiplier"])
    if mech.get("name") == "dp-fedavg":
        return float(mech["noise_multiplier"])
    return None


def _given_schedule(cos: np.ndarray, schedule: np.ndarray, is_in: np.ndarray, metrics: dict, delta: float, cfg) -> dict:
    """The schedule-aware audit over canaries with ≥ 1 scheduled round, beside the unamplified ε."""
    k = schedule.sum(axis=1)
    kmax = int(k.max()) if k.size else 0
    z = round_noise_multiplier(metrics)
    scores = schedule_scores(cos, schedule) if k.size else np.zeros(0)
    return {
        "compared_epsilon": None if z is None else unamplified_epsilon(z, kmax, delta),
        "compared_with": f"Gaussian mechanism over {kmax} round(s), no sampling amplification",
        "max_participations": kmax,
        "scheduled": int(k.size),
        "scheduled_inserted": int(is_in.sum()),
        **score_audit(scores[is_in], scores[~is_in], delta, cfg),
    }


def _like(cfg, run_dir: Path):
    """The model's parameter pytree (shapes and leaf order of training), initialised, never trained."""
    import jax

    from keyboard_fl.models import init_params
    from keyboard_fl.tokenizer import Tokenizer

    tok = Tokenizer.load(run_dir / runs.TOKENIZER_FILE)
    _, params = init_params(dataclasses.replace(cfg.model, vocab_size=tok.vocab_size), jax.random.key(0))
    return params


def audit_canaries(plan, rounds: int, cosines_of, metrics: dict, delta: float) -> dict:
    """Schedule-blind and schedule-aware audits of ``plan``'s canaries after ``rounds`` rounds.

    ``cosines_of(ids) -> [len(ids), 1 + rounds]``: each direction's cosine
    with the final delta, then with each round's delta. Only the directions
    the audits score are asked for (the blind subset and the scheduled ones).
    """
    cc = plan.config
    schedule = plan.schedules(rounds)
    is_in = np.zeros(cc.count, bool)
    is_in[plan.inserted] = True
    blind = np.arange(min(cc.count, cc.scored or cc.count))  # ids fixed before any coin: a valid subset
    scheduled = np.flatnonzero(schedule.any(axis=1))
    ids = np.union1d(blind, scheduled)  # one direction draw per scored canary
    cos = cosines_of(ids)
    rows_blind, rows_sched = np.searchsorted(ids, blind), np.searchsorted(ids, scheduled)
    return {
        "canaries": cc.count,
        "inserted": len(plan.inserted),
        "inserted_sampled": int(schedule[plan.inserted].any(axis=1).sum()),
        "blind_scored": int(blind.size),
        **audit_scores(cos[rows_blind], is_in[blind], ~is_in[blind], delta, cc),
        "given_schedule": _given_schedule(
            cos[rows_sched, 1:], schedule[scheduled], is_in[scheduled], metrics, delta, cc
        ),
    }


def empirical_audit_run(run_dir: str | Path) -> dict:
    """Audit a finished run trained with canary clients; the result goes to ``metrics.json`` under ``audit.empirical``."""
    from keyboard_fl.config import RunConfig
    from keyboard_fl.fl.canary_clients import CanaryPlan, canary_cosines
    from keyboard_fl.privacy import default_delta

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
    like = _like(cfg, run_dir)
    result = {
        "accounted_epsilon": float(metrics.get("epsilon", math.inf)),
        "delta": delta,
        "rounds": rounds,
        "dimension": int(iterates.shape[1]),
        "null_std_theory": float(iterates.shape[1] ** -0.5),
        **audit_canaries(plan, rounds, lambda ids: canary_cosines(cfg.seed, ids, like, deltas), metrics, delta),
        "note": "canary clients: random unit directions x C, Poisson-sampled with the real users' q, clipped and "
        "noised with them (Andrew et al. 2024); epsilon_est from Gaussian fits of inserted vs never-inserted "
        "scores; epsilon_lower: one-run bound (Steinke et al. 2023, jax-privacy CanaryScoreAuditor) at "
        "'confidence'. final_model / all_iterates: schedule-blind, bounded by accounted_epsilon (over the first "
        "'blind_scored' directions); given_schedule: canaries (or held-out directions) with a scheduled round, "
        "bounded by its compared_epsilon (no amplification)",
    }
    from keyboard_fl.audit import save_empirical_audit

    save_empirical_audit(run_dir, metrics, "empirical", result)
    return result
