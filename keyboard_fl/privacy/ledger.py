"""The privacy ledger: rounds spent so far by one run, serialisable into checkpoints.

A ledger is immutable: ``step()`` returns a new one. It stores the
mechanism's ``to_dict()`` (the one source of z, C and q) with δ and the
number of rounds, so ε is a pure, cached function of what is stored: a run
resumed from a checkpoint reports exactly the ε of an uninterrupted one, and
``metrics.json`` can be re-accounted from the same dict with dp-accounting.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from keyboard_fl.privacy.accountant import check_accountant, check_accountant_for_sampling, describe
from keyboard_fl.privacy.accountant import epsilon as _epsilon
from keyboard_fl.privacy.events import (
    NEIGHBOURING,
    PRIMARY_ACCOUNTANT,
    Participation,
    PrivacySpec,
    as_int,
    check_delta,
    check_noise_multiplier,
    check_population,
    check_rounds,
    check_sampling,
    check_sampling_prob,
    cohort_size,
)
from keyboard_fl.privacy.mechanism import DpFedAvg, mechanism_epsilon, mechanism_from_dict

__all__ = ["PrivacyLedger"]


@dataclasses.dataclass(frozen=True)
class PrivacyLedger:
    """Immutable record of the privacy spent so far by one training run.

    ``PrivacyLedger(z, q, δ, N)`` is the classic DP-FedAvg ledger;
    :meth:`for_mechanism` builds one for any mechanism (its ``to_dict()`` is
    kept in ``mechanism`` and is what ε is computed from; z, q, N are copied
    for display). Store ``to_dict()`` in a checkpoint; ``from_dict`` restores it.
    """

    # z: noise multiplier accounted per round (the mechanism's, for display).
    noise_multiplier: float
    # q: per-round user inclusion probability (cohort fraction for "fixed").
    sampling_prob: float
    # δ of the reported (ε, δ) guarantee.
    delta: float
    # N: number of users in the population.
    population: int
    # "poisson" (add/remove, PLD) or "fixed" (replace-one, RDP); the mechanism's participation scheme.
    sampling: str = "poisson"
    # Rounds composed so far (0 = nothing released yet, ε = 0).
    rounds: int = 0
    # Mechanism.to_dict(): the source of truth for ε (None: classic DP-FedAvg from the fields above).
    mechanism: dict | None = None
    # "pld" or "rdp" to report ε with; None: the mechanism's own (PLD for Poisson, RDP for fixed).
    accountant: str | None = None

    def __post_init__(self) -> None:
        if self.mechanism is None:
            check_sampling(self.sampling)
        q = check_sampling_prob(self.sampling_prob)
        population = check_population(self.population, required=True)
        object.__setattr__(self, "noise_multiplier", check_noise_multiplier(self.noise_multiplier))
        object.__setattr__(self, "sampling_prob", q)
        object.__setattr__(self, "delta", check_delta(self.delta))
        object.__setattr__(self, "population", population)
        object.__setattr__(self, "rounds", check_rounds(self.rounds, allow_zero=True))
        if self.sampling == "fixed":
            cohort_size(q, population)
        if self.accountant is not None:
            check_accountant(self.accountant)
            if self.sampling == "fixed":
                check_accountant_for_sampling(self.accountant, "fixed")

    @classmethod
    def for_mechanism(cls, mech: Any, delta: float, rounds: int = 0, accountant: str | None = None) -> PrivacyLedger:
        """A ledger that accounts ``mech`` (its ``to_dict()`` is stored and is what ε is computed from)."""
        p = mech.participation
        if p.population is None:
            raise ValueError("the ledger needs the mechanism's participation.population (N)")
        return cls(
            mech.noise_multiplier, p.sampling_prob, delta, p.population, p.scheme, rounds, mech.to_dict(), accountant
        )

    def mech(self) -> Any:
        """The mechanism this ledger accounts."""
        if self.mechanism is not None:
            return mechanism_from_dict(self.mechanism)
        return DpFedAvg(1.0, self.noise_multiplier, Participation(self.sampling, self.sampling_prob, self.population))

    def default_accountant(self) -> str:
        """The accountant ε is reported with."""
        if self.accountant is not None:
            return self.accountant
        return self.mech().accountant if self.mechanism is not None else PRIMARY_ACCOUNTANT[self.sampling]

    def step(self, n: int = 1) -> PrivacyLedger:
        """A new ledger with ``n`` more rounds composed."""
        n = as_int(n, "n")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return dataclasses.replace(self, rounds=self.rounds + n)

    def spec(self) -> PrivacySpec:
        """The DP-FedAvg PrivacySpec of the rounds so far (needs rounds >= 1)."""
        return PrivacySpec(
            self.noise_multiplier, self.sampling_prob, self.rounds, self.delta, self.sampling, self.population
        )  # type: ignore[arg-type]

    def epsilon(self, accountant: str | None = None) -> float:
        """ε so far. ``None`` picks the mechanism's accountant ("pld" for Poisson, "rdp" for fixed)."""
        accountant = check_accountant(accountant or self.default_accountant())
        if self.mechanism is not None:
            return mechanism_epsilon(self.mech(), self.rounds, self.delta, accountant=accountant)
        if accountant == "pld" and self.sampling == "fixed":
            check_accountant_for_sampling(accountant, "fixed")
        if self.rounds == 0:
            return 0.0
        return _epsilon(
            self.noise_multiplier,
            self.sampling_prob,
            self.rounds,
            self.delta,
            accountant=accountant,
            sampling=self.sampling,
            population=self.population,
        )  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PrivacyLedger:
        """Inverse of ``to_dict``; rejects unknown or missing keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown PrivacyLedger keys: {sorted(unknown)}")
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing = required - set(d)
        if missing:
            raise ValueError(f"missing PrivacyLedger keys: {sorted(missing)}")
        return cls(**d)

    def report(self) -> dict[str, Any]:
        """What to log every round and show wherever the model is used."""
        base = {
            "epsilon": 0.0,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "sampling_prob": self.sampling_prob,
            "rounds": self.rounds,
            "population": self.population,
            "privacy_unit": "user",
            "accountant": self.default_accountant(),
            "sampling": self.sampling,
            "neighbouring": NEIGHBOURING[self.sampling],
            "epsilon_rdp": 0.0,
        }
        if self.mechanism is not None:
            out = {**base, "epsilon": self.epsilon(), "mechanism": self.mechanism}
            if self.rounds and self.noise_multiplier > 0:
                try:
                    out["epsilon_rdp"] = self.epsilon("rdp")
                except ValueError:  # an event only one accountant supports
                    out["epsilon_rdp"] = None
            elif self.rounds:
                out["epsilon_rdp"] = float("inf")
            return out
        if self.rounds == 0:
            return base
        out = describe(self.spec())
        if self.accountant is not None and self.accountant != out["accountant"]:
            out.update(accountant=self.accountant, epsilon=self.epsilon())
        return out
