"""One privacy mechanism abstraction: event, noise, calibration and state in one object.

A :class:`Mechanism` is a frozen config plus pure functions (optax-style). It
is the single source of truth for z (noise multiplier), C (clip norm) and q
(participation): the jitted round (:mod:`keyboard_fl.fl.round`), the Flower
strategy, the ledger, checkpoints and ``metrics.json`` all read them from it.

* ``dp_event(rounds)``: the dp-accounting event of ``rounds`` rounds;
  ``accountant`` names the one that reports ε, under
  ``participation.relation()``.
* ``init(params)`` → state pytree (checkpointed; resume is exact);
  ``clip_norm_of(state)`` → C this round; ``noise_std_of(state)`` → std of the
  noise on the sum this round.
* ``privatize(clipped_sum, stats, state, key)`` → ``(noised_sum, new_state)``,
  jittable. The round then divides by ``expected_cohort`` (fixed denominator).
* ``with_noise_multiplier(z)`` (calibration searches over it), ``to_dict()``
  (metrics.json; :func:`mechanism_from_dict` inverts it).

Mechanisms here: :class:`DpFedAvg` (McMahan et al. 2018, arXiv:1710.06963) and
:class:`AdaptiveClipping` (Andrew et al. 2021, arXiv:1905.03871), which wraps
a base mechanism. DP-FTRL with correlated noise registers itself from
:mod:`keyboard_fl.privacy.dp_ftrl` with :func:`register_mechanism`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import dp_accounting
import jax
import jax.numpy as jnp

from keyboard_fl.privacy.accountant import (
    PLD_DISCRETIZATION,
    check_accountant,
    check_accountant_for_sampling,
    event_epsilon,
)
from keyboard_fl.privacy.calibration import calibrate
from keyboard_fl.privacy.clipping import add_gaussian_noise
from keyboard_fl.privacy.events import PRIMARY_ACCOUNTANT, Participation, check_noise_multiplier, gaussian_round_event

PyTree = Any

__all__ = [
    "MECHANISMS",
    "AdaptiveClipping",
    "ClipStats",
    "DpFedAvg",
    "Mechanism",
    "calibrate_mechanism",
    "make_mechanism",
    "mechanism_epsilon",
    "mechanism_from_dict",
    "register_mechanism",
]


class ClipStats(NamedTuple):
    """What the round knows about this round's clipping (un-noised; only mechanisms may use it)."""

    clip_norm: jax.Array | float  # C the deltas were clipped to this round
    norms: jax.Array  # float32[K]: pre-clip norms (0 where not valid)
    valid: jax.Array  # bool[K]: sampled clients whose clipped delta is in the sum


@runtime_checkable
class Mechanism(Protocol):
    """A user-level DP aggregation mechanism (see the module docstring)."""

    name: str
    clip_norm: float  # initial C
    noise_multiplier: float  # z as accounted (noise std / sensitivity per round)
    participation: Participation

    @property
    def expected_cohort(self) -> float: ...
    @property
    def accountant(self) -> str: ...
    def dp_event(self, rounds: int) -> dp_accounting.DpEvent: ...
    def init(self, params: PyTree) -> PyTree: ...
    def clip_norm_of(self, state: PyTree) -> jax.Array | float: ...
    def noise_std_of(self, state: PyTree) -> jax.Array | float: ...
    def privatize(
        self, clipped_sum: PyTree, stats: ClipStats, state: PyTree, key: jax.Array
    ) -> tuple[PyTree, PyTree]: ...
    def with_noise_multiplier(self, z: float) -> Mechanism: ...
    def to_dict(self) -> dict[str, Any]: ...


# --------------------------------------------------------------------------
# DP-FedAvg: independent Gaussian noise on the clipped sum, every round
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DpFedAvg:
    """DP-FedAvg: ``Σ clip(Δ_u, C) + N(0, (zC)² I)`` each round, Poisson or fixed-size cohorts."""

    name: ClassVar[str] = "dp-fedavg"
    adaptive_compatible: ClassVar[bool] = True  # one independent Gaussian per round: Andrew et al.'s split applies

    # C: L2 bound on each user's whole delta = the L2 sensitivity of the sum (add/remove).
    clip_norm: float
    # z: noise std on the sum is z*C; with q and the rounds it sets ε.
    noise_multiplier: float
    # How users are sampled; must be the sampler's real behaviour.
    participation: Participation

    def __post_init__(self) -> None:
        if not (math.isfinite(float(self.clip_norm)) and float(self.clip_norm) > 0):
            raise ValueError(f"clip_norm must be a finite number > 0, got {self.clip_norm!r}")
        object.__setattr__(self, "clip_norm", float(self.clip_norm))
        object.__setattr__(self, "noise_multiplier", check_noise_multiplier(self.noise_multiplier))
        gaussian_round_event(self.participation, self.noise_multiplier)  # refuses cyclic / min-separation

    @property
    def expected_cohort(self) -> float:
        return self.participation.expected_cohort

    @property
    def accountant(self) -> str:
        return PRIMARY_ACCOUNTANT[self.participation.scheme]

    def dp_event(self, rounds: int) -> dp_accounting.DpEvent:
        return dp_accounting.SelfComposedDpEvent(
            gaussian_round_event(self.participation, self.noise_multiplier), rounds
        )

    def init(self, params: PyTree) -> PyTree:
        return ()

    def clip_norm_of(self, state: PyTree) -> float:
        return self.clip_norm

    def noise_std_of(self, state: PyTree) -> float:
        return self.noise_multiplier * self.clip_norm

    def privatize(self, clipped_sum: PyTree, stats: ClipStats, state: PyTree, key: jax.Array) -> tuple[PyTree, PyTree]:
        # z * C in Python when C is static: bit-identical to the pre-mechanism round.
        return add_gaussian_noise(clipped_sum, self.noise_multiplier * stats.clip_norm, key), state

    def with_noise_multiplier(self, z: float) -> DpFedAvg:
        return dataclasses.replace(self, noise_multiplier=z)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "clip_norm": self.clip_norm,
            "noise_multiplier": self.noise_multiplier,
            "participation": self.participation.to_dict(),
        }


# --------------------------------------------------------------------------
# Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021)
# --------------------------------------------------------------------------


def _count_default(base: Any) -> float:
    return 0.05 * base.expected_cohort  # TFF gaussian_adaptive: clipped_count_stddev = 0.05 · clients per round


@dataclasses.dataclass(frozen=True)
class AdaptiveClipping:
    """C follows the ``target_quantile`` of update norms through a noised count (arXiv:1905.03871, Alg. 1).

    Each round every included user reports ``b_u = 1[‖Δ_u‖ <= C]``; the server
    releases ``S = Σ (b_u − ½) + N(0, σ_b²)`` (sensitivity ½ under add/remove),
    ``b̄ = S / (qN) + ½``, and updates ``C ← C · exp(−η (b̄ − γ))`` (geometric).
    The sum gets ``z_Δ = (z⁻² − (2σ_b)⁻²)^(-1/2)``: the pair (noised sum,
    noised count) is a Gaussian mechanism whose sensitivity-to-noise ratio is
    ``√(z_Δ⁻² + (2σ_b)⁻²) = 1/z`` (Andrew et al. Thm. 1), so each round is
    accounted as the base mechanism's event with multiplier ``z``: exactly
    ``base.dp_event`` (Poisson: ``PoissonSampled(q, Gaussian(z))``).
    """

    name: ClassVar[str] = "adaptive-clipping"

    # The mechanism whose sum is noised; its clip_norm is the initial C
    # (TFF: 0.1) and its noise_multiplier the total z accounted per round.
    base: Any
    # γ: target fraction of updates left unclipped (TFF / paper default 0.5).
    target_quantile: float = 0.5
    # η: geometric step of the clip norm per round (TFF default 0.2).
    learning_rate: float = 0.2
    # σ_b: std of the noise on the count; None = 0.05 · expected cohort (TFF).
    count_stddev: float | None = None

    def __post_init__(self) -> None:
        if not getattr(type(self.base), "adaptive_compatible", False):
            raise ValueError(
                f"adaptive clipping cannot wrap mechanism {getattr(self.base, 'name', self.base)!r}: its accounting "
                "does not compose with an independent per-round count (only mechanisms with adaptive_compatible)"
            )
        if not 0 < self.target_quantile < 1:
            raise ValueError(f"adaptive_clip_quantile must be in (0, 1), got {self.target_quantile!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"adaptive_clip_lr must be > 0, got {self.learning_rate!r}")
        sigma_b = _count_default(self.base) if self.count_stddev is None else float(self.count_stddev)
        if not (math.isfinite(sigma_b) and sigma_b > 0):
            raise ValueError(f"adaptive_clip_count_stddev must be > 0, got {self.count_stddev!r}")
        object.__setattr__(self, "count_stddev", sigma_b)
        z = self.base.noise_multiplier
        if z > 0 and not z < 2 * sigma_b:
            raise ValueError(
                f"adaptive clipping needs z < 2·σ_b to leave noise for the sum: z={z:.4g}, "
                f"adaptive_clip_count_stddev σ_b={sigma_b:.4g}; raise σ_b or the cohort"
            )

    # The accounted quantities are the base's.
    clip_norm = property(lambda self: self.base.clip_norm)
    noise_multiplier = property(lambda self: self.base.noise_multiplier)
    participation = property(lambda self: self.base.participation)
    expected_cohort = property(lambda self: self.base.expected_cohort)
    accountant = property(lambda self: self.base.accountant)

    @property
    def sum_noise_multiplier(self) -> float:
        """z_Δ = (z⁻² − (2σ_b)⁻²)^(-1/2): the multiplier actually applied to the sum."""
        z = self.base.noise_multiplier
        if z == 0:
            return 0.0
        return (z**-2 - (2 * self.count_stddev) ** -2) ** -0.5

    @functools.cached_property
    def _inner(self) -> Any:
        return self.base.with_noise_multiplier(self.sum_noise_multiplier)

    def dp_event(self, rounds: int) -> dp_accounting.DpEvent:
        return self.base.dp_event(rounds)

    def init(self, params: PyTree) -> PyTree:
        return {"clip_norm": jnp.asarray(self.base.clip_norm, jnp.float32), "base": self.base.init(params)}

    def clip_norm_of(self, state: PyTree) -> jax.Array:
        return state["clip_norm"]

    def noise_std_of(self, state: PyTree) -> jax.Array:
        return self.sum_noise_multiplier * state["clip_norm"]

    def privatize(self, clipped_sum: PyTree, stats: ClipStats, state: PyTree, key: jax.Array) -> tuple[PyTree, PyTree]:
        k_sum, k_count = jax.random.split(key)
        noised, base_state = self._inner.privatize(clipped_sum, stats, state["base"], k_sum)
        c = state["clip_norm"]
        below = jnp.where(stats.valid & (stats.norms <= c), 0.5, -0.5)
        count = jnp.sum(jnp.where(stats.valid, below, 0.0)) + self.count_stddev * jax.random.normal(
            k_count, (), jnp.float32
        )
        frac = count / self.expected_cohort + 0.5
        new_c = c * jnp.exp(-self.learning_rate * (frac - self.target_quantile))
        return noised, {"clip_norm": new_c.astype(jnp.float32), "base": base_state}

    def with_noise_multiplier(self, z: float) -> AdaptiveClipping:
        return dataclasses.replace(self, base=self.base.with_noise_multiplier(z))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base": self.base.to_dict(),
            "target_quantile": self.target_quantile,
            "learning_rate": self.learning_rate,
            "count_stddev": self.count_stddev,
            "sum_noise_multiplier": self.sum_noise_multiplier,
            "composition": "per round: (sum, count) is one Gaussian mechanism with multiplier z = "
            "(z_sum^-2 + (2 count_stddev)^-2)^(-1/2); accounted as the base event with z",
        }


# --------------------------------------------------------------------------
# Registry, ε and calibration over any mechanism
# --------------------------------------------------------------------------

MECHANISMS: dict[str, Callable[..., Any]] = {}
_FROM_DICT: dict[str, Callable[[dict], Any]] = {}


def register_mechanism(name: str, factory: Callable[..., Any], from_dict: Callable[[dict], Any]) -> None:
    """Makes ``name`` selectable (``federated.mechanism``, ``--mechanism``).

    ``factory(clip_norm=, noise_multiplier=, participation=, **params)`` builds
    it; ``from_dict(mech.to_dict())`` rebuilds it (metrics.json, ledgers).
    """
    MECHANISMS[name] = factory
    _FROM_DICT[name] = from_dict


def _dp_fedavg_from_dict(d: dict) -> DpFedAvg:
    return DpFedAvg(d["clip_norm"], d["noise_multiplier"], Participation.from_dict(d["participation"]))


def _adaptive_from_dict(d: dict) -> AdaptiveClipping:
    return AdaptiveClipping(mechanism_from_dict(d["base"]), d["target_quantile"], d["learning_rate"], d["count_stddev"])


register_mechanism("dp-fedavg", DpFedAvg, _dp_fedavg_from_dict)
_FROM_DICT[AdaptiveClipping.name] = _adaptive_from_dict


def _register_dp_ftrl() -> None:
    from keyboard_fl.privacy import dp_ftrl  # imports jax-privacy; no cycle (it does not import this module)

    register_mechanism(dp_ftrl.BandMF.name, dp_ftrl.make_bandmf, dp_ftrl.mechanism_from_dict)
    register_mechanism(dp_ftrl.BLT.name, dp_ftrl.make_blt, dp_ftrl.mechanism_from_dict)


_register_dp_ftrl()


def mechanism_from_dict(d: dict[str, Any]) -> Any:
    """Inverse of ``Mechanism.to_dict`` (for ε from metrics.json or a checkpoint's ledger)."""
    if not isinstance(d, dict) or "name" not in d:
        raise ValueError(f"mechanism: expected an object with a 'name', got {d!r}")
    if d["name"] not in _FROM_DICT:
        raise ValueError(f"mechanism.name: unknown {d['name']!r}; known: {sorted(_FROM_DICT)}")
    try:
        return _FROM_DICT[d["name"]](d)
    except KeyError as e:
        raise ValueError(f"mechanism {d['name']!r}: missing key {e}") from None


def make_mechanism(
    name: str,
    *,
    clip_norm: float,
    noise_multiplier: float,
    participation: Participation,
    adaptive_clip_quantile: float | None = None,
    adaptive_clip_lr: float = 0.2,
    adaptive_clip_count_stddev: float | None = None,
    **params: Any,
) -> Any:
    """The mechanism ``name`` (see :data:`MECHANISMS`), wrapped in adaptive clipping if a quantile is given."""
    if name not in MECHANISMS:
        raise ValueError(f"mechanism: unknown {name!r}; known: {sorted(MECHANISMS)}")
    mech = MECHANISMS[name](
        clip_norm=clip_norm, noise_multiplier=noise_multiplier, participation=participation, **params
    )
    if adaptive_clip_quantile is not None:
        mech = AdaptiveClipping(mech, adaptive_clip_quantile, adaptive_clip_lr, adaptive_clip_count_stddev)
    return mech


@functools.lru_cache(maxsize=1024)
def _mechanism_epsilon(mech: Any, rounds: int, delta: float, accountant: str, vdi: float) -> float:
    relation = getattr(mech.participation, "relation", None)  # every scheme but "fixed" is add/remove-one
    relation = relation() if relation else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    return event_epsilon(mech.dp_event(rounds), delta, accountant=accountant, relation=relation, pld_discretization=vdi)


def mechanism_epsilon(
    mech: Any,
    rounds: int,
    delta: float,
    *,
    accountant: str | None = None,
    pld_discretization: float = PLD_DISCRETIZATION,
) -> float:
    """ε after ``rounds`` rounds of ``mech`` at ``delta`` (0 rounds: 0; z = 0: inf). Cached."""
    if rounds == 0:
        return 0.0
    if mech.noise_multiplier == 0:
        return math.inf
    accountant = check_accountant(accountant or mech.accountant)
    if accountant == "pld" and mech.participation.scheme == "fixed":
        check_accountant_for_sampling(accountant, "fixed")
    return _mechanism_epsilon(mech, int(rounds), float(delta), accountant, float(pld_discretization))


def calibrate_mechanism(
    mech: Any, target_epsilon: float, rounds: int, delta: float, *, accountant: str | None = None, rtol: float = 0.005
) -> Any:
    """``mech`` with the smallest noise multiplier whose ε after ``rounds`` is <= ``target_epsilon``."""
    if isinstance(mech, AdaptiveClipping):  # same event as its base; the z < 2σ_b check comes after
        base = calibrate_mechanism(mech.base, target_epsilon, rounds, delta, accountant=accountant, rtol=rtol)
        return dataclasses.replace(mech, base=base)
    z = calibrate(
        lambda z: mechanism_epsilon(mech.with_noise_multiplier(z), rounds, delta, accountant=accountant),
        target_epsilon,
        rtol=rtol,
        what=f" for {mech.name} at δ={delta}",
    )
    return mech.with_noise_multiplier(z)
