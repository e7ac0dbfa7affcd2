"""Empirical ε of any run from planted phrases (:mod:`keyboard_fl.privacy.phrase_canaries`).

Every phrase, planted or not, is scored by the model's log-likelihood minus
the public starting point's (the score of training alone; plain
log-likelihood without pretraining). In/out scores give ε_est (Gaussian fits,
Andrew et al. 2024) and the one-run lower bound ε_lower (Steinke et al. 2023)
beside the replace-one-user ε that bounds them (∞ for central and FedAvg).
The result goes to ``metrics.json`` under ``audit.phrases``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from keyboard_fl import runs

__all__ = ["phrase_audit", "phrase_audit_run", "planted_phrases"]


def planted_phrases(cfg):
    """The phrases, coins and carriers a run with ``cfg.phrase_canaries`` was trained with, drawn again."""
    if cfg.phrase_canaries is None:
        raise ValueError("this run was trained without phrase canaries; train with --phrase-canaries K")
    from keyboard_fl.data.access import UserIds, split_view
    from keyboard_fl.privacy.phrase_canaries import draw_phrases
    from keyboard_fl.sources import private_source

    train = UserIds(split_view(private_source(cfg), "train"))
    return draw_phrases(cfg.phrase_canaries, cfg.seed, train, cfg.eval.baseline_users)


def phrase_audit(scores: np.ndarray, inserted: np.ndarray, metrics: dict, delta: float, pcfg) -> dict:
    """ε_est and ε_lower of phrase scores (higher = "looks planted") beside the replace-one ε."""
    from keyboard_fl.empirical_audit import score_audit
    from keyboard_fl.privacy.phrase_canaries import replace_one_epsilon

    inserted = np.asarray(inserted, bool)
    accounted = metrics.get("epsilon", math.inf) if runs.is_private(metrics) else math.inf
    return {
        "compared_epsilon": replace_one_epsilon(metrics),
        "compared_with": "replace-one user (planting changes an existing user's data)",
        "accounted_epsilon": float(accounted),
        "delta": delta,
        "phrases": int(inserted.size),
        "planted": int(inserted.sum()),
        "repetitions": pcfg.repetitions,
        **score_audit(scores[inserted], scores[~inserted], delta, pcfg),
    }


def phrase_audit_run(run_dir: str | Path, suggester=None) -> dict:
    """Audit a finished run trained with phrase canaries; adds ``audit.phrases`` to its ``metrics.json``."""
    from keyboard_fl.audit import public_start
    from keyboard_fl.config import RunConfig
    from keyboard_fl.privacy import default_delta

    run_dir = Path(run_dir)
    cfg = RunConfig.load(run_dir / runs.CONFIG_FILE)
    drawn = planted_phrases(cfg)
    if suggester is None:
        from keyboard_fl.loading import load_suggester

        suggester, _ = load_suggester(run_dir)
    metrics = runs.load_metrics(run_dir)
    from keyboard_fl.audit import phrase_log_likelihoods

    g, tok = suggester.graphdef, suggester.tokenizer
    scores = phrase_log_likelihoods(g, suggester.params, tok, drawn.phrases)
    public = public_start(cfg, suggester, run_dir)
    if public is not None:
        scores = scores - phrase_log_likelihoods(g, public, tok, drawn.phrases)
    delta = float(metrics.get("delta") or default_delta(metrics["data"]["train_users"]))
    result = {
        **phrase_audit(scores, drawn.inserted, metrics, delta, cfg.phrase_canaries),
        "score": "log-likelihood minus the public start's" if public is not None else "log-likelihood",
        "note": "phrase canaries: random phrases of one template, each planted (fair coin) in one training user "
        "among those the central baseline trains on; epsilon_est from Gaussian fits, epsilon_lower: one-run bound "
        "(Steinke et al. 2023) at 'confidence', both bounded by compared_epsilon (replace-one user)",
    }
    from keyboard_fl.audit import save_empirical_audit

    save_empirical_audit(run_dir, metrics, "phrases", result)
    return result
