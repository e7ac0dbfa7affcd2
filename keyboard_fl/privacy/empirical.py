"""Empirical privacy: ε measured from a trained model, beside the accounted ε.

Two estimators over *canary scores* (higher = "looks inserted"):

* **One-shot estimate** (Andrew et al., ICLR 2024, arXiv:2302.03098): canary
  clients whose update is a fixed random unit direction (× C) go through the
  same sampling, clipping and noise as real users. After training, the cosine
  of each inserted direction with the model delta is compared with the cosines
  of directions never inserted; both are fitted by Gaussians and ``ε_est`` is
  the ε of telling ``N(μ₀, σ₀²)`` from ``N(μ₁, σ₁²)`` at δ
  (:func:`gaussian_pair_epsilon`). With all iterates released the statistic
  is each direction's largest cosine over the rounds' deltas.
* **One-run lower bound** (Steinke, Nasr, Jagielski 2023, arXiv:2305.08846)
  with jax-privacy's :class:`jax_privacy.auditing.CanaryScoreAuditor`: from
  in/out canary scores, an ``ε_lower`` that holds with the stated confidence;
  also TPR at FPR = 10⁻³ and AUROC. A correct DP implementation can never
  (beyond the confidence level) give ``ε_lower`` above the ε that bounds each
  canary's inclusion (see below). With ``n`` guesses the bound cannot exceed
  what ``n`` correct guesses out of ``n`` prove (``epsilon_lower_max``, reported
  beside it): more canaries, not more leakage, raise that ceiling.

Which ε a bound is compared with depends on what the auditor conditions on:

* canary clients scored without their schedule (final model, all-iterates
  max): each canary is a client Poisson-sampled with the users' q, so the
  accounted (amplified) ε bounds it;
* canary clients scored *given* the rounds each canary is (or, for a never
  inserted one, would have been) sampled in, drawn independently of its
  in/out coin: sampling no longer hides anything, so the bound is the
  unamplified Gaussian mechanism over those rounds,
  :func:`unamplified_epsilon` (``μ = √k / z``, exact for independent
  Gaussian noise each round);
* planted phrases (:mod:`keyboard_fl.privacy.phrase_canaries`): planting
  changes an existing user's data, the replace-one relation, whose ε is
  computed by the accountant with ``REPLACE_ONE``.

jax-privacy 2.0.0's ``epsilon_from_gdp`` over-reports ε (it takes ``abs(mu)``,
fixed upstream later), so it is not used: the Gaussian → (ε, δ) conversion
here is computed exactly (hockey-stick divergence of two normals).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import optimize
from scipy.stats import norm

__all__ = [
    "CanaryClientConfig",
    "epsilon_estimate",
    "gaussian_pair_delta",
    "gaussian_pair_epsilon",
    "gdp_epsilon",
    "one_run_bound",
    "unamplified_epsilon",
]


@dataclasses.dataclass(frozen=True)
class CanaryClientConfig:
    """Canary clients of the one-shot estimate (Andrew et al. 2024): extra clients with a random fixed update."""

    count: int = 1000  # canary directions drawn in all (in + out); each is a unit vector in parameter space
    inserted_fraction: float = 0.5  # share of the directions inserted as clients (the rest: the "out" canaries)
    confidence: float = 0.95  # confidence level of the one-run lower bound ε_lower
    fpr: float = 1e-3  # false-positive rate at which the attack's TPR is reported
    # How directions become "in": "half" (exactly `inserted`, a random subset: the original plan, kept so older
    # runs replay) or "coin" (an independent fair coin each, as Steinke et al.'s theorem assumes).
    assignment: str = "half"
    # Directions scored by the schedule-blind statistics (final model, all-iterates max): the ids below this
    # (fixed before any coin, so any subset size is valid); None: all. Each costs a d-dimensional draw at audit time.
    scored: int | None = None

    def __post_init__(self):
        if not (isinstance(self.count, int) and self.count >= 4):
            raise ValueError(f"canary_clients.count must be an integer ≥ 4, got {self.count!r}")
        if not 0 < self.inserted_fraction < 1:
            raise ValueError(f"canary_clients.inserted_fraction must be in (0, 1), got {self.inserted_fraction!r}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"canary_clients.confidence must be in (0, 1), got {self.confidence!r}")
        if not 0 < self.fpr < 1:
            raise ValueError(f"canary_clients.fpr must be in (0, 1), got {self.fpr!r}")
        if self.assignment not in ("half", "coin"):
            raise ValueError(f"canary_clients.assignment must be 'half' or 'coin', got {self.assignment!r}")
        if self.scored is not None and not (isinstance(self.scored, int) and 4 <= self.scored):
            raise ValueError(f"canary_clients.scored must be an integer ≥ 4 or null, got {self.scored!r}")

    @property
    def inserted(self) -> int:
        """Number of inserted ("in") canary clients with ``assignment="half"``."""
        return max(1, min(self.count - 1, round(self.count * self.inserted_fraction)))


def _log_mass(lo: float, hi: float, mu: float, sd: float) -> float:
    """ln P(lo < X < hi) for X ~ N(mu, sd²), accurate in both tails."""
    if hi <= lo:
        return -math.inf
    a, b = (lo - mu) / sd, (hi - mu) / sd
    if b == math.inf:
        return float(norm.logsf(a))
    if a == -math.inf:
        return float(norm.logcdf(b))
    if a > 0:  # both in the right tail: difference of survival functions
        return float(norm.logsf(a) + np.log1p(-np.exp(norm.logsf(b) - norm.logsf(a))))
    return float(norm.logcdf(b) + np.log1p(-np.exp(norm.logcdf(a) - norm.logcdf(b))))


def _loss_region(eps: float, p: tuple[float, float], q: tuple[float, float]) -> list[tuple[float, float]]:
    """Intervals where ln p(x) − ln q(x) > ε (p, q normal (mean, sd)): a quadratic inequality."""
    (m1, s1), (m0, s0) = p, q
    a = 0.5 / s0**2 - 0.5 / s1**2
    b = m1 / s1**2 - m0 / s0**2
    c = math.log(s0 / s1) - m1**2 / (2 * s1**2) + m0**2 / (2 * s0**2) - eps
    inf = math.inf
    if abs(a) < 1e-12 * max(abs(b), 1e-300) or a == 0:
        if b == 0:
            return [(-inf, inf)] if c > 0 else []
        root = -c / b
        return [(root, inf)] if b > 0 else [(-inf, root)]
    disc = b * b - 4 * a * c
    if disc <= 0:
        return [(-inf, inf)] if a > 0 else []
    r = sorted(((-b - math.sqrt(disc)) / (2 * a), (-b + math.sqrt(disc)) / (2 * a)))
    return [(-inf, r[0]), (r[1], inf)] if a > 0 else [(r[0], r[1])]


def _hockey_stick(eps: float, p: tuple[float, float], q: tuple[float, float]) -> float:
    """``sup_S P(S) − e^ε Q(S)`` for normals ``p``, ``q`` (the δ of (ε, δ)-indistinguishability, one direction)."""
    total = 0.0
    for lo, hi in _loss_region(eps, p, q):
        lp, lq = _log_mass(lo, hi, *p), _log_mass(lo, hi, *q)
        if lp > -math.inf:
            total += math.exp(lp) - (math.exp(eps + lq) if lq > -math.inf else 0.0)
    return max(total, 0.0)


def gaussian_pair_delta(eps: float, mu0: float, sd0: float, mu1: float, sd1: float) -> float:
    """δ(ε) of telling ``N(mu0, sd0²)`` from ``N(mu1, sd1²)``: the larger hockey-stick divergence of the two directions."""
    p, q = (float(mu1), float(sd1)), (float(mu0), float(sd0))
    return max(_hockey_stick(eps, p, q), _hockey_stick(eps, q, p))


def gaussian_pair_epsilon(mu0: float, sd0: float, mu1: float, sd1: float, delta: float) -> float:
    """The smallest ε ≥ 0 with δ(ε) ≤ ``delta`` for the pair ``N(mu0, sd0²)``, ``N(mu1, sd1²)``.

    Equal standard deviations give μ-GDP with ``μ = |mu1 − mu0| / sd``
    (Dong, Roth, Su 2019, Cor. 2.13); unequal ones are solved exactly
    (the privacy-loss region is a quadratic inequality). ``inf`` if no finite
    ε reaches ``delta`` (e.g. a zero standard deviation with distinct means).
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if not (sd0 >= 0 and sd1 >= 0) or not all(map(math.isfinite, (mu0, sd0, mu1, sd1))):
        raise ValueError(f"need finite means and standard deviations ≥ 0, got {(mu0, sd0, mu1, sd1)}")
    if sd0 == 0 or sd1 == 0:
        return 0.0 if (sd0 == sd1 and mu0 == mu1) else math.inf

    def gap(e: float) -> float:
        return gaussian_pair_delta(e, mu0, sd0, mu1, sd1) - delta

    if gap(0.0) <= 0:
        return 0.0
    hi = 1.0
    while gap(hi) > 0:
        hi *= 2
        if hi > 1e6:
            return math.inf
    return float(optimize.brentq(gap, hi / 2 if hi > 1 else 0.0, hi, xtol=1e-9, rtol=1e-10))


def gdp_epsilon(mu: float, delta: float) -> float:
    """ε at ``delta`` of μ-Gaussian DP (computed here, not with jax-privacy 2.0.0's ``epsilon_from_gdp``)."""
    return gaussian_pair_epsilon(0.0, 1.0, float(mu), 1.0, delta)


def unamplified_epsilon(noise_multiplier: float, participations: int, delta: float) -> float:
    """ε of ``participations`` rounds of the Gaussian mechanism with multiplier ``z``, no sampling amplification.

    The bound for a canary whose rounds are known: ``μ = √k / z`` Gaussian DP
    (Gaussian mechanisms compose exactly, adaptively too; Dong, Roth, Su 2019).
    ``inf`` without noise, 0 for no participation.
    """
    if participations <= 0:
        return 0.0
    if not noise_multiplier > 0:
        return math.inf
    return gdp_epsilon(math.sqrt(participations) / float(noise_multiplier), delta)


def _fit(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, np.float64)
    if x.size < 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"need ≥ 2 finite scores to fit a Gaussian, got {x.size}")
    return float(x.mean()), float(x.std(ddof=1))


def epsilon_estimate(observed, null, delta: float) -> dict:
    """Andrew et al. (2024)'s ε_est: Gaussians fitted to inserted (``observed``) and never-inserted (``null``) scores."""
    (m1, s1), (m0, s0) = _fit(observed), _fit(null)
    return {
        "epsilon": gaussian_pair_epsilon(m0, s0, m1, s1, delta),
        "delta": delta,
        "inserted_mean": m1,
        "inserted_std": s1,
        "null_mean": m0,
        "null_std": s0,
    }


def one_run_bound(in_scores, out_scores, delta: float, *, confidence: float = 0.95, fpr: float = 1e-3) -> dict:
    """Steinke et al. (2023)'s one-run ε lower bound, TPR at ``fpr`` and AUROC (jax-privacy ``CanaryScoreAuditor``).

    ``ε_lower`` holds with probability ≥ ``confidence`` over the random choice of
    inserted canaries (Bonferroni over thresholds, as jax-privacy does by default).
    ``epsilon_lower_max`` is the bound for perfectly separated scores with the
    same counts: the most these canaries could ever show.
    """
    from jax_privacy.auditing import CanaryScoreAuditor

    ins, outs = np.asarray(in_scores, np.float64), np.asarray(out_scores, np.float64)
    auditor = CanaryScoreAuditor(ins, outs)
    ceiling = CanaryScoreAuditor(np.ones_like(ins), np.zeros_like(outs))
    return {
        "epsilon_lower": float(auditor.epsilon_one_run(significance=1 - confidence, delta=delta)),
        "epsilon_lower_max": float(ceiling.epsilon_one_run(significance=1 - confidence, delta=delta)),
        "confidence": confidence,
        "delta": delta,
        "tpr_at_fpr": float(auditor.tpr_at_given_fpr(fpr)),
        "fpr": fpr,
        "auroc": float(auditor.attack_auroc()),
        "in_canaries": int(ins.size),
        "out_canaries": int(outs.size),
    }
