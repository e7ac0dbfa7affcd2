"""Calibration: the smallest noise multiplier z that reaches a target ε.

As in dp-accounting's ``mechanism_calibration``: ε is decreasing in one
parameter (z), so calibration is a bracketing search over it. The search is
generic (:func:`calibrate`, any ``z -> ε``); :func:`calibrate_noise_multiplier`
is the DP-FedAvg case, and each mechanism calibrates itself through
:func:`keyboard_fl.privacy.mechanism.calibrate_mechanism`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from keyboard_fl.privacy.accountant import PLD_DISCRETIZATION, check_accountant, epsilon

__all__ = ["calibrate", "calibrate_noise_multiplier"]


def calibrate(eps: Callable[[float], float], target_epsilon: float, *, rtol: float = 0.005, what: str = "") -> float:
    """Smallest z with ``eps(z) <= target_epsilon`` (``eps`` decreasing in z).

    The returned z satisfies ``(1 - rtol) * target <= eps(z) <= target`` unless
    z is pinned down to 1e-9 relative first.
    """
    target = float(target_epsilon)
    if not target > 0 or math.isinf(target):
        raise ValueError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")
    if not 0 < rtol < 1:
        raise ValueError(f"rtol must be in (0, 1), got {rtol!r}")
    eps(1.0)  # validates every other argument with a clear message
    lo, hi = 0.0, 1.0  # invariant: eps(lo) > target >= eps(hi)
    while eps(hi) > target:
        lo, hi = hi, 2.0 * hi
        if hi > 1e6:
            raise ValueError(f"no noise multiplier <= 1e6 reaches ε <= {target}{what}; is target_epsilon too small?")
    while eps(hi) < (1.0 - rtol) * target and hi - lo > 1e-9 * hi:
        mid = 0.5 * (lo + hi)
        if eps(mid) > target:
            lo = mid
        else:
            hi = mid
    return hi


def calibrate_noise_multiplier(
    target_epsilon: float,
    sampling_prob: float,
    rounds: int,
    delta: float,
    *,
    accountant: str = "pld",
    sampling: str = "poisson",
    population: int | None = None,
    rtol: float = 0.005,
    pld_discretization: float = PLD_DISCRETIZATION,
) -> float:
    """Smallest DP-FedAvg noise multiplier z with ε(z) <= target_epsilon (~20 ε evaluations, ~1–2 s with PLD)."""
    check_accountant(accountant)

    def eps(z: float) -> float:
        return epsilon(
            z,
            sampling_prob,
            rounds,
            delta,
            accountant=accountant,
            sampling=sampling,
            population=population,
            pld_discretization=pld_discretization,
        )

    return calibrate(eps, target_epsilon, rtol=rtol, what=f" at δ={delta}")
