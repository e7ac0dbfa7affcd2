"""Privacy as data: who participates, and the DpEvent of a run (dp-accounting's ``dp_event``).

The privacy unit is the **user** (DESIGN.md §3). A :class:`Participation`
says how users take part in rounds; :func:`gaussian_round_event` turns one
round of a Gaussian mechanism under that participation into a dp-accounting
``DpEvent``; :func:`dp_event` composes ``rounds`` of them for DP-FedAvg
(McMahan et al. 2018, arXiv:1710.06963). Mechanisms
(:mod:`keyboard_fl.privacy.mechanism`) build their events from these pieces.

Sampling schemes and neighbouring relations
-------------------------------------------
``"poisson"``: each user joins each round independently with probability
    ``q``; add/remove-one-user relation; L2 sensitivity of the clipped sum
    ``C``. Event ``SelfComposed(PoissonSampled(q, Gaussian(z)), rounds)``,
    accounted with PLD (Koskela et al. 2020; Doroshenko et al. 2022,
    arXiv:2207.04380), RDP (Mironov 2017) as a cross-check.
``"fixed"``: exactly ``m = round(q N)`` users drawn without replacement each
    round. Amplification is only known under the replace-one-user relation
    (Wang, Balle & Kasiviswanathan 2019, arXiv:1808.00087, Thm. 27), which
    dp-accounting 0.6 accounts with RDP only. Replacing one user's clipped
    update moves the sum by up to ``2C``, while dp-accounting's RDP code for
    this event reads ``GaussianDpEvent.noise_multiplier`` as std /
    replace-one sensitivity (google/differential-privacy #378): we pass
    ``z / 2``. Never reported as a Poisson ε.
``"cyclic"`` and ``"min-separation"``: participation patterns of DP-FTRL
    with correlated noise (Choquette-Choo et al. 2023, arXiv:2306.08153);
    their events belong to the correlated-noise mechanism
    (:mod:`keyboard_fl.privacy.dp_ftrl`): :func:`gaussian_round_event`
    refuses them, so a plain Gaussian mechanism can never be accounted as
    if it were amplified by a pattern it does not follow.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import Any, Literal

import dp_accounting

__all__ = [
    "SAMPLINGS",
    "SCHEMES",
    "Participation",
    "PrivacySpec",
    "dp_event",
    "gaussian_round_event",
]

Sampling = Literal["poisson", "fixed"]
SAMPLINGS: tuple[str, ...] = ("poisson", "fixed")
# Every participation scheme a sampler or mechanism may declare.
SCHEMES: tuple[str, ...] = ("poisson", "fixed", "cyclic", "min-separation")

NEIGHBOURING = {
    "poisson": "add-remove one user",
    "fixed": "replace-one user",
    "cyclic": "add-remove one user",
    "min-separation": "add-remove one user",
}
PRIMARY_ACCOUNTANT = {"poisson": "pld", "fixed": "rdp"}


# --------------------------------------------------------------------------
# Validation helpers (clear messages; NaN fails every range check)
# --------------------------------------------------------------------------


def as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def check_noise_multiplier(z: float) -> float:
    z = float(z)
    if not z >= 0 or math.isinf(z):
        raise ValueError(f"noise_multiplier must be a finite number >= 0 (noise std / clip norm), got {z!r}")
    return z


def check_sampling_prob(q: float) -> float:
    q = float(q)
    if not 0 < q <= 1:
        raise ValueError(f"sampling_prob must be in (0, 1] (per-round inclusion probability of each user), got {q!r}")
    return q


def check_delta(delta: float) -> float:
    delta = float(delta)
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return delta


def check_rounds(rounds: Any, *, allow_zero: bool = False) -> int:
    r = as_int(rounds, "rounds")
    low = 0 if allow_zero else 1
    if r < low:
        raise ValueError(f"rounds must be >= {low}, got {r}")
    return r


def check_sampling(sampling: str) -> str:
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; expected one of {SAMPLINGS}")
    return sampling


def check_population(population: Any, *, required: bool) -> int | None:
    if population is None:
        if required:
            raise ValueError(
                "population (N) is required for sampling='fixed': the cohort size is m = round(sampling_prob * N)"
            )
        return None
    n = as_int(population, "population")
    if n < 1:
        raise ValueError(f"population must be >= 1, got {n}")
    return n


def cohort_size(sampling_prob: float, population: int) -> int:
    m = int(round(sampling_prob * population))
    if m < 1:
        raise ValueError(
            f"fixed cohort size round(sampling_prob * population) = round({sampling_prob} * {population}) = {m}; "
            "it must be >= 1"
        )
    return min(m, population)


# --------------------------------------------------------------------------
# Participation: the sampler's behaviour, as the accountant must assume it
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Participation:
    """How users take part in rounds; the accountant assumes exactly this."""

    # "poisson": independent inclusion with prob q each round (add/remove DP).
    # "fixed": exactly round(qN) users without replacement (replace-one DP).
    # "cyclic" / "min-separation": DP-FTRL participation patterns (each user
    # at most once every `min_separation` rounds); accounted by that mechanism.
    scheme: str = "poisson"
    # q: per-round inclusion probability (Poisson) or cohort fraction m/N.
    sampling_prob: float = 1.0
    # N: users in the population; sets the expected cohort qN, the fixed
    # DP-FedAvg denominator. Required for "fixed".
    population: int | None = None
    # b: minimum number of rounds between two participations of one user
    # ("cyclic" / "min-separation" only; the band width of banded MF).
    min_separation: int | None = None

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"participation.scheme: unknown {self.scheme!r}; expected one of {SCHEMES}")
        object.__setattr__(self, "sampling_prob", check_sampling_prob(self.sampling_prob))
        object.__setattr__(self, "population", check_population(self.population, required=self.scheme == "fixed"))
        if self.scheme == "fixed":
            cohort_size(self.sampling_prob, self.population)
        if self.scheme in ("cyclic", "min-separation"):
            if self.min_separation is None or as_int(self.min_separation, "min_separation") < 1:
                raise ValueError(f"participation.min_separation must be an integer >= 1 for scheme {self.scheme!r}")
            object.__setattr__(self, "min_separation", as_int(self.min_separation, "min_separation"))
        elif self.min_separation is not None:
            raise ValueError(f"participation.min_separation is only for cyclic/min-separation, not {self.scheme!r}")

    @property
    def expected_cohort(self) -> float:
        """Exact (fixed) or expected (Poisson) cohort size: DP-FedAvg's fixed denominator."""
        if self.population is None:
            raise ValueError("participation.population is unknown: the expected cohort qN needs N")
        if self.scheme == "fixed":
            return float(cohort_size(self.sampling_prob, self.population))
        return self.sampling_prob * self.population

    @property
    def neighbouring(self) -> str:
        return NEIGHBOURING[self.scheme]

    def relation(self) -> dp_accounting.NeighboringRelation:
        if self.scheme == "fixed":
            return dp_accounting.NeighboringRelation.REPLACE_ONE
        return dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "participation") -> Participation:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None


def gaussian_round_event(participation: Participation, noise_multiplier: float) -> dp_accounting.DpEvent:
    """One round of a Gaussian mechanism (std ``zC`` on a sum of ``C``-clipped updates) under ``participation``."""
    z = check_noise_multiplier(noise_multiplier)
    p = participation
    if p.scheme == "poisson":
        return dp_accounting.PoissonSampledDpEvent(p.sampling_prob, dp_accounting.GaussianDpEvent(z))
    if p.scheme == "fixed":
        # Replace-one sensitivity of a clipped sum is 2C; dp-accounting's RDP
        # formula for this event expects std / sensitivity, hence z / 2.
        return dp_accounting.SampledWithoutReplacementDpEvent(
            source_dataset_size=p.population,
            sample_size=cohort_size(p.sampling_prob, p.population),
            event=dp_accounting.GaussianDpEvent(z / 2),
        )
    raise ValueError(
        f"participation.scheme={p.scheme!r} has no independent-noise Gaussian event here: a plain Gaussian "
        "mechanism (DP-FedAvg) needs 'poisson' or 'fixed' participation; cyclic / min-separation "
        "participation is accounted by a correlated-noise (DP-FTRL) mechanism"
    )


# --------------------------------------------------------------------------
# The classic DP-FedAvg spec (kept: the scalar-argument API)
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PrivacySpec:
    """Everything the accountant needs to know about a DP-FedAvg run."""

    # z: Gaussian noise std divided by the per-user clip norm C (0 = no noise).
    noise_multiplier: float
    # q: per-round inclusion probability of each user (Poisson), or the
    # cohort fraction m/N for sampling="fixed".
    sampling_prob: float
    # Number of rounds (sampled Gaussian mechanisms) composed.
    rounds: int
    # δ of the reported (ε, δ) guarantee; see default_delta().
    delta: float
    # "poisson" (add/remove-one-user DP, PLD) or "fixed" (replace-one, RDP only).
    sampling: Sampling = "poisson"
    # N, the number of users; required for "fixed" (public under replace-one).
    population: int | None = None

    def __post_init__(self) -> None:
        sampling = check_sampling(self.sampling)
        population = check_population(self.population, required=sampling == "fixed")
        q = check_sampling_prob(self.sampling_prob)
        object.__setattr__(self, "noise_multiplier", check_noise_multiplier(self.noise_multiplier))
        object.__setattr__(self, "sampling_prob", q)
        object.__setattr__(self, "rounds", check_rounds(self.rounds))
        object.__setattr__(self, "delta", check_delta(self.delta))
        object.__setattr__(self, "population", population)
        if sampling == "fixed":
            cohort_size(q, population)

    @property
    def participation(self) -> Participation:
        return Participation(self.sampling, self.sampling_prob, self.population)

    @property
    def cohort_size(self) -> float:
        """Exact cohort size (fixed) or expected cohort size q*N (Poisson)."""
        if self.sampling == "fixed":
            return float(cohort_size(self.sampling_prob, self.population))
        if self.population is None:
            raise ValueError("population is unknown for this spec")
        return self.sampling_prob * self.population


def dp_event(spec: PrivacySpec) -> dp_accounting.DpEvent:
    """The DpEvent of a whole DP-FedAvg run: ``rounds`` sampled Gaussian mechanisms.

    Poisson: ``SelfComposed(PoissonSampled(q, Gaussian(z)), rounds)``.
    Fixed: ``SelfComposed(SampledWithoutReplacement(N, m, Gaussian(z/2)), rounds)``,
    for an RDP accountant with the REPLACE_ONE relation.
    """
    return dp_accounting.SelfComposedDpEvent(
        gaussian_round_event(spec.participation, spec.noise_multiplier), spec.rounds
    )
