"""ε of a DpEvent with dp-accounting: PLD (tight), RDP as a cross-check.

PLD (Koskela et al. 2020, arXiv:1906.03049; Doroshenko et al. 2022,
arXiv:2207.04380) gives a tight, *pessimistic* (upper) estimate; RDP
(Mironov 2017, arXiv:1702.07476; Mironov, Talwar & Zhang 2019) is looser and
the only accountant dp-accounting 0.6 has for fixed-size cohorts.

Discretisation: PLD ε is computed on a grid of privacy-loss values of spacing
``PLD_DISCRETIZATION`` (1e-3). Rounding is pessimistic, so a coarser grid can
only *raise* ε. Against a 1e-4 grid, 1e-3 changes ε by < 0.1 % over
q ∈ [0.01, 1], z ∈ [0.5, 2], 100–3,000 rounds, and is ~10x faster.

δ: :func:`default_delta` returns a round power of ten at most ``1/(10 N)`` and
at most 1e-5 (a mechanism publishing one random user's data is (0, 1/N)-DP;
Gboard uses δ = 1e-10, Xu et al. 2023, arXiv:2305.18465).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Literal

import dp_accounting
import numpy as np
from dp_accounting.pld import privacy_loss_distribution as _pld_lib
from dp_accounting.rdp import rdp_privacy_accountant as _rdp_lib

from keyboard_fl.privacy.events import (
    NEIGHBOURING,
    PRIMARY_ACCOUNTANT,
    PrivacySpec,
    check_delta,
    check_population,
    check_rounds,
    dp_event,
    gaussian_round_event,
)

__all__ = [
    "ACCOUNTANTS",
    "PLD_DISCRETIZATION",
    "default_delta",
    "describe",
    "epsilon",
    "epsilon_curve",
    "event_epsilon",
    "make_accountant",
]

Accountant = Literal["pld", "rdp"]
ACCOUNTANTS: tuple[str, ...] = ("pld", "rdp")
PLD_DISCRETIZATION = 1e-3  # see "Discretisation" in the module docstring


def check_accountant(accountant: str) -> str:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}; expected one of {ACCOUNTANTS}")
    return accountant


def check_accountant_for_sampling(accountant: str, sampling: str) -> None:
    if sampling == "fixed" and accountant == "pld":
        raise ValueError(
            "accountant='pld' cannot account sampling='fixed': dp-accounting 0.6 has no PLD for fixed-size "
            "cohorts sampled without replacement. Use accountant='rdp' (replace-one-user relation; a "
            "different, larger ε than Poisson's add/remove ε) or Poisson sampling."
        )


def make_accountant(
    accountant: str,
    relation: dp_accounting.NeighboringRelation = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
    pld_discretization: float = PLD_DISCRETIZATION,
) -> dp_accounting.PrivacyAccountant:
    """A fresh dp-accounting accountant ("pld" or "rdp") for ``relation``."""
    check_accountant(accountant)
    if accountant == "pld":
        return dp_accounting.pld.PLDAccountant(relation, value_discretization_interval=pld_discretization)
    return dp_accounting.rdp.RdpAccountant(neighboring_relation=relation)


def event_epsilon(
    event: dp_accounting.DpEvent,
    delta: float,
    *,
    accountant: Accountant = "pld",
    relation: dp_accounting.NeighboringRelation = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
    pld_discretization: float = PLD_DISCRETIZATION,
) -> float:
    """ε at ``delta`` of any DpEvent (raises if the accountant does not support it)."""
    acc = make_accountant(accountant, relation, pld_discretization)
    if not acc.supports(event):
        raise ValueError(f"the {accountant!r} accountant does not support the event {event}")
    acc.compose(event)
    return float(acc.get_epsilon(check_delta(delta)))


@functools.lru_cache(maxsize=4096)
def _epsilon_cached(
    noise_multiplier: float,
    sampling_prob: float,
    rounds: int,
    delta: float,
    accountant: str,
    sampling: str,
    population: int | None,
    pld_discretization: float,
) -> float:
    if noise_multiplier == 0:
        return math.inf
    spec = PrivacySpec(noise_multiplier, sampling_prob, rounds, delta, sampling, population)
    return event_epsilon(
        dp_event(spec),
        delta,
        accountant=accountant,
        relation=spec.participation.relation(),
        pld_discretization=pld_discretization,
    )


def epsilon(
    noise_multiplier: float,
    sampling_prob: float,
    rounds: int,
    delta: float,
    *,
    accountant: Accountant = "pld",
    sampling: str = "poisson",
    population: int | None = None,
    pld_discretization: float = PLD_DISCRETIZATION,
) -> float:
    """ε of ``rounds`` rounds of DP-FedAvg at the given δ (user-level).

    ``noise_multiplier == 0`` gives ``inf``. With ``sampling="fixed"`` the ε is
    under the replace-one-user relation and needs ``accountant="rdp"`` and
    ``population``. Results are cached on the scalar arguments.
    """
    spec = PrivacySpec(noise_multiplier, sampling_prob, rounds, delta, sampling, population)
    check_accountant(accountant)
    check_accountant_for_sampling(accountant, spec.sampling)
    if not pld_discretization > 0:
        raise ValueError(f"pld_discretization must be > 0, got {pld_discretization!r}")
    return _epsilon_cached(
        spec.noise_multiplier,
        spec.sampling_prob,
        spec.rounds,
        spec.delta,
        accountant,
        spec.sampling,
        spec.population if spec.sampling == "fixed" else None,  # cache key
        float(pld_discretization),
    )


def epsilon_curve(
    noise_multiplier: float,
    sampling_prob: float,
    rounds: int | Sequence[int],
    delta: float,
    *,
    accountant: Accountant = "pld",
    sampling: str = "poisson",
    population: int | None = None,
    pld_discretization: float = PLD_DISCRETIZATION,
) -> np.ndarray:
    """ε after several numbers of rounds, as a float array.

    ``rounds`` is an int ``R`` (ε after each of rounds 1..R) or a sequence of
    round counts (each equals ``epsilon(...)`` for that count; cheapest for
    plots). For an int, RDP scales the one-round RDP curve (exact) and PLD
    composes one round at a time (~2 ms a round), its pessimistic rounding
    differing from ``epsilon(...)`` in the ~7th significant digit.
    """
    check_accountant(accountant)
    kw = dict(accountant=accountant, sampling=sampling, population=population, pld_discretization=pld_discretization)
    if isinstance(rounds, (Sequence, np.ndarray)) and not isinstance(rounds, str):
        points = [check_rounds(r) for r in rounds]
        return np.array([epsilon(noise_multiplier, sampling_prob, r, delta, **kw) for r in points], dtype=np.float64)

    spec = PrivacySpec(noise_multiplier, sampling_prob, rounds, delta, sampling, population)
    check_accountant_for_sampling(accountant, spec.sampling)
    if spec.noise_multiplier == 0:
        return np.full(spec.rounds, np.inf)
    if accountant == "rdp":
        acc = make_accountant("rdp", spec.participation.relation())
        acc.compose(gaussian_round_event(spec.participation, spec.noise_multiplier))
        orders, rdp_one = acc.orders, acc.rdp
        return np.array(
            [_rdp_lib.compute_epsilon(orders, k * rdp_one, spec.delta)[0] for k in range(1, spec.rounds + 1)],
            dtype=np.float64,
        )
    one_round = _pld_lib.from_gaussian_mechanism(
        standard_deviation=spec.noise_multiplier,
        value_discretization_interval=pld_discretization,
        sampling_prob=spec.sampling_prob,
    )
    out = np.empty(spec.rounds, dtype=np.float64)
    composed = one_round
    for k in range(spec.rounds):
        if k:
            composed = composed.compose(one_round)
        out[k] = composed.get_epsilon_for_delta(spec.delta)
    return out


def default_delta(population: int) -> float:
    """δ for a population of N users: min(10^-(ceil(log10 N) + 1), 1e-5).

    Always at least ten times below 1/N. Examples: N=1,000 -> 1e-5;
    N=50,000 -> 1e-6; N=1,000,000 -> 1e-7.
    """
    n = check_population(population, required=True)
    exponent = math.ceil(math.log10(n)) + 1
    while 10.0 ** (-exponent) > 1.0 / (10 * n):  # guard log10 rounding at exact powers of ten
        exponent += 1
    return min(10.0 ** (-exponent), 1e-5)


def describe(spec: PrivacySpec, *, pld_discretization: float = PLD_DISCRETIZATION) -> dict[str, Any]:
    """JSON-ready description of the guarantee a DP-FedAvg spec gives (for logs, UI)."""
    accountant = PRIMARY_ACCOUNTANT[spec.sampling]
    kw = dict(sampling=spec.sampling, population=spec.population, pld_discretization=pld_discretization)
    args = (spec.noise_multiplier, spec.sampling_prob, spec.rounds, spec.delta)
    eps_rdp = epsilon(*args, accountant="rdp", **kw)
    eps = eps_rdp if accountant == "rdp" else epsilon(*args, accountant="pld", **kw)
    out: dict[str, Any] = {
        "epsilon": eps,
        "delta": spec.delta,
        "noise_multiplier": spec.noise_multiplier,
        "sampling_prob": spec.sampling_prob,
        "rounds": spec.rounds,
        "population": spec.population,
        "privacy_unit": "user",
        "accountant": accountant,
        "sampling": spec.sampling,
        "neighbouring": NEIGHBOURING[spec.sampling],
        "epsilon_rdp": eps_rdp,
    }
    if spec.sampling == "fixed":
        out["cohort_size"] = int(spec.cohort_size)
    return out
