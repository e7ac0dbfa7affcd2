"""DP-FTRL with correlated noise: banded MF ("dp-ftrl-bandmf") and BLT ("dp-ftrl-blt").

Round ``t`` adds ``σ (C⁻¹ Z)_t`` to the sum of clipped updates instead of
DP-FedAvg's fresh ``σ Z_t``; the noise of successive rounds partly cancels in
the model (:mod:`keyboard_fl.privacy.correlated_noise`). Gboard's production
mechanism (Xu et al. 2023, arXiv:2305.18465; McMahan, Xu, Zhang 2024,
arXiv:2408.08868). Both use jax-privacy 2.0.0's streaming noising matrices:
the generator state (band history / BLT buffers, a few model-sized arrays and
an index) is a pytree from :meth:`init`, carried in the server state and
checkpoints, so a resumed run adds exactly the noise an uninterrupted one
would.

Participation is :class:`keyboard_fl.fl.participation.CyclicPoisson` (users
in ``b`` bands, round ``t`` draws band ``t mod b``), and each mechanism
accepts only the variant its accountant assumes:

* ``dp-ftrl-bandmf`` (Choquette-Choo et al. 2023, arXiv:2306.08153, Thm. 4):
  ``C`` has at most ``b`` bands and unit column norms, so a user's
  participations touch disjoint rows of ``C``; ε is jax-privacy's
  ``amplified_bandmf_event``, i.e. ``ceil(T/b)`` Poisson(``q_b``)-sampled
  Gaussian mechanisms with multiplier ``z``, composed with PLD. ``σ = z C``.
* ``dp-ftrl-blt`` (arXiv:2408.08868): jax-privacy 2.0.0 has no amplification
  by sampling for BLT, so participation must be deterministic cyclic
  (``q_b = 1``: (k, b)-min-sep with ``k = ceil(T/b)``); the run is one
  Gaussian mechanism with sensitivity ``C · sens(C)``, ``sens`` the exact
  min-sep sensitivity of the BLT's Toeplitz ``C`` (arXiv:2405.13763, Thm. 2),
  and ``σ = z · C · sens``. ε: ``GaussianDpEvent(z)`` under PLD.

Any other participation is refused with the reason. The ε of a run is
reproducible from :meth:`to_dict` alone (:func:`mechanism_from_dict`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar

import dp_accounting
import jax
import jax.numpy as jnp
from jax_privacy.experimental import accounting as jp_accounting

from keyboard_fl.fl.participation import CyclicPoisson
from keyboard_fl.privacy import correlated_noise as cn
from keyboard_fl.privacy.clipping import add_gaussian_noise

PyTree = Any

__all__ = [
    "BLT",
    "BandMF",
    "calibrate_noise_multiplier",
    "check_participation",
    "make_bandmf",
    "make_blt",
    "mechanism_epsilon",
    "mechanism_from_dict",
]

# PLD grid for ε, as in keyboard_fl.privacy.accounting (pessimistic rounding:
# a coarser grid only raises ε; 1e-3 is within 0.1% of 1e-4 and ~10x faster).
PLD_DISCRETIZATION = 1e-3


def _check_common(m: Any) -> None:
    c, z = float(m.clip_norm), float(m.noise_multiplier)
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"{m.name}: clip_norm must be a finite number > 0, got {m.clip_norm!r}")
    if not (math.isfinite(z) and z >= 0):
        raise ValueError(f"{m.name}: noise_multiplier must be a finite number >= 0, got {m.noise_multiplier!r}")
    if isinstance(m.rounds, bool) or not isinstance(m.rounds, int) or m.rounds < 1:
        raise ValueError(f"{m.name}: rounds (size of the factorised matrix) must be an integer >= 1, got {m.rounds!r}")
    object.__setattr__(m, "clip_norm", c)
    object.__setattr__(m, "noise_multiplier", z)


def check_participation(name: str, participation: Any, *, deterministic: bool) -> CyclicPoisson:
    """The participation if ``name``'s accountant assumes it; otherwise a ValueError saying why."""
    if not isinstance(participation, CyclicPoisson):
        scheme = getattr(participation, "scheme", type(participation).__name__)
        raise ValueError(  # noqa: TRY004 - a config error (wrong sampling), reported as ValueError
            f"{name}: participation {scheme!r} does not match its accountant, which assumes block-cyclic "
            "participation (users in b bands, round t draws band t mod b; keyboard_fl.fl.participation."
            "CyclicPoisson). Plain Poisson or fixed-size cohorts are DP-FedAvg's samplers: use mechanism "
            "'dp-fedavg', or sample with CyclicPoisson"
        )
    if deterministic and participation.sampling_prob != 1.0:
        raise ValueError(
            f"{name}: participation sampling_prob={participation.sampling_prob} < 1, but jax-privacy 2.0.0 "
            "accounts BLT without amplification by sampling: its ε assumes every user of the active band "
            "joins (deterministic cyclic, (k, b)-min-sep). Set sampling_prob=1 (bands of expected-cohort "
            "size), or use 'dp-ftrl-bandmf', whose accountant assumes Poisson sampling within bands"
        )
    return participation


@dataclasses.dataclass(frozen=True)
class _CorrelatedNoise:
    """Shared state handling of the two mechanisms (see the module docstring)."""

    accountant: ClassVar[str] = "pld"
    # The noised clip count of adaptive clipping would need its own share of
    # the correlated accounting: not supported.
    adaptive_compatible: ClassVar[bool] = False
    kind: ClassVar[str] = ""

    @property
    def expected_cohort(self) -> float:
        """Fixed denominator of the average update: ``q_b · N / b``."""
        return self.participation.expected_cohort

    @property
    def noise_std(self) -> float:
        """σ: std of the iid noise ``Z`` before ``C⁻¹``: ``z · C · sens``."""
        return self.noise_multiplier * self.clip_norm * self.sensitivity

    @functools.cached_property
    def _noising(self):
        return cn.noising_matrix(self.kind, self._matrix_params(), self.rounds)

    def init(self, params: PyTree) -> PyTree:
        """Noise generator state for a model shaped like ``params`` (float32 buffers + index)."""
        like = jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), jnp.float32), params)
        return self._noising.init_multiply(like)

    def clip_norm_of(self, state: PyTree) -> float:
        return self.clip_norm

    def noise_std_of(self, state: PyTree) -> float:
        return self.noise_std

    def privatize(self, clipped_sum: PyTree, stats: Any, state: PyTree, key: jax.Array) -> tuple[PyTree, PyTree]:
        """``Σ clip(Δ_u) + σ (C⁻¹ Z)_t`` and the next state; ``Z_t`` drawn from ``key`` (jittable).

        ``stats`` (this round's clip statistics) is unused: C is fixed.
        """
        del stats
        zeros = jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), jnp.float32), clipped_sum)
        iid = add_gaussian_noise(zeros, self.noise_std, key)
        noise, state = self._noising.multiply_next(iid, state)
        noised = jax.tree.map(lambda x, n: (x + n).astype(jnp.result_type(x)), clipped_sum, noise)
        return noised, state

    def with_noise_multiplier(self, z: float):
        return dataclasses.replace(self, noise_multiplier=z)

    def _check_rounds(self, rounds: int) -> int:
        if isinstance(rounds, bool) or not isinstance(rounds, int) or not 0 <= rounds <= self.rounds:
            raise ValueError(
                f"{self.name}: rounds={rounds!r} outside [0, {self.rounds}]: the factorisation was built for "
                f"{self.rounds} rounds; rebuild it for a longer run"
            )
        return rounds

    def epsilon(self, delta: float, rounds: int | None = None) -> float:
        """ε after ``rounds`` (default: all) at ``delta``, PLD."""
        return mechanism_epsilon(self, delta, self.rounds if rounds is None else rounds)


@dataclasses.dataclass(frozen=True)
class BandMF(_CorrelatedNoise):
    """Amplified banded-MF DP-FTRL (arXiv:2306.08153): ``b``-banded, column-normalised Toeplitz ``C``."""

    name: ClassVar[str] = "dp-ftrl-bandmf"
    kind: ClassVar[str] = "bandmf"

    # C: L2 bound on each user's whole delta.
    clip_norm: float
    # z: σ = z·C (columns of C have norm 1); with q_b, b and T it sets ε.
    noise_multiplier: float
    # Block-cyclic Poisson sampler; b >= the number of bands of C.
    participation: CyclicPoisson
    # T: rounds the factorisation covers (its columns are normalised for T).
    rounds: int
    # Toeplitz coefficients of C's first column (L2 norm 1); len = bands.
    coefs: tuple[float, ...]

    def __post_init__(self) -> None:
        _check_common(self)
        p = check_participation(self.name, self.participation, deterministic=False)
        coefs = tuple(float(c) for c in self.coefs)
        if not coefs or len(coefs) > p.num_bands:
            raise ValueError(
                f"{self.name}: C has {len(coefs)} bands but participation has num_bands={p.num_bands}: "
                "amplified BandMF needs bands(C) <= b so that one user's participations never share a row of C"
            )
        if abs(math.sqrt(sum(c * c for c in coefs)) - 1) > 1e-6 or min(coefs) < 0:
            raise ValueError(f"{self.name}: coefs must be non-negative with L2 norm 1, got {coefs}")
        object.__setattr__(self, "coefs", coefs)

    @classmethod
    def build(
        cls,
        *,
        clip_norm: float,
        noise_multiplier: float,
        participation: CyclicPoisson,
        rounds: int,
        coefs: tuple[float, ...] | None = None,
    ) -> BandMF:
        """``coefs`` optimised for ``rounds`` with ``participation.num_bands`` bands when not given."""
        if coefs is None:
            coefs = cn.optimize_bandmf_coefs(rounds, min(participation.num_bands, rounds))
        return cls(clip_norm, noise_multiplier, participation, rounds, tuple(coefs))

    @property
    def sensitivity(self) -> float:
        """Per-participation column norm of C (1: column-normalised)."""
        return 1.0

    def _matrix_params(self) -> dict:
        return {"coefs": self.coefs}

    def dp_event(self, rounds: int) -> dp_accounting.DpEvent:
        p = self.participation
        return jp_accounting.amplified_bandmf_event(
            self.noise_multiplier, self._check_rounds(rounds), num_bands=p.num_bands, sampling_prob=p.sampling_prob
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "clip_norm": self.clip_norm,
            "noise_multiplier": self.noise_multiplier,
            "participation": self.participation.to_dict(),
            "rounds": self.rounds,
            "coefs": list(self.coefs),
            "noise_std": self.noise_std,
            "accountant": self.accountant,
            "event": "jax_privacy.experimental.accounting.amplified_bandmf_event (jax-privacy 2.0.0)",
        }


@dataclasses.dataclass(frozen=True)
class BLT(_CorrelatedNoise):
    """BLT-DP-FTRL (arXiv:2408.08868) under deterministic b-cyclic participation."""

    name: ClassVar[str] = "dp-ftrl-blt"
    kind: ClassVar[str] = "blt"

    # C: L2 bound on each user's whole delta.
    clip_norm: float
    # z: σ = z·C·sens(C); the run is one Gaussian mechanism with multiplier z.
    noise_multiplier: float
    # Deterministic cyclic sampler (sampling_prob 1): (ceil(T/b), b)-min-sep.
    participation: CyclicPoisson
    # T: rounds the sensitivity is computed for (a run may not exceed it).
    rounds: int
    # BLT parameters of the strategy C (buffer decays in (0, 1), output scales).
    buf_decay: tuple[float, ...]
    output_scale: tuple[float, ...]

    def __post_init__(self) -> None:
        _check_common(self)
        p = check_participation(self.name, self.participation, deterministic=True)
        object.__setattr__(self, "buf_decay", tuple(float(x) for x in self.buf_decay))
        object.__setattr__(self, "output_scale", tuple(float(x) for x in self.output_scale))
        if len(self.buf_decay) != len(self.output_scale) or not self.buf_decay:
            raise ValueError(f"{self.name}: buf_decay and output_scale must be non-empty and of equal length")
        try:
            self.sensitivity  # noqa: B018 - validates: jax-privacy raises for increasing / negative coefs
        except ValueError as e:
            raise ValueError(f"{self.name}: BLT not valid for min-sep sensitivity with b={p.num_bands}: {e}") from None

    @classmethod
    def build(
        cls,
        *,
        clip_norm: float,
        noise_multiplier: float,
        participation: CyclicPoisson,
        rounds: int,
        buf_decay: tuple[float, ...] | None = None,
        output_scale: tuple[float, ...] | None = None,
    ) -> BLT:
        """BLT optimised for ``rounds`` under the participation's (k, b)-min-sep when not given."""
        if buf_decay is None or output_scale is None:
            p = check_participation(cls.name, participation, deterministic=True)
            buf_decay, output_scale = cn.optimize_blt(rounds, p.min_separation, p.max_participations(rounds))
        return cls(clip_norm, noise_multiplier, participation, rounds, tuple(buf_decay), tuple(output_scale))

    def sensitivity_at(self, rounds: int) -> float:
        """max ‖C u‖ over the (ceil(r/b), b)-min-sep patterns of the first ``rounds`` rounds."""
        p = self.participation
        return math.sqrt(
            cn.blt_sensitivity_squared(
                self.buf_decay, self.output_scale, rounds, p.min_separation, p.max_participations(rounds)
            )
        )

    @functools.cached_property
    def sensitivity(self) -> float:
        return self.sensitivity_at(self.rounds)

    def _matrix_params(self) -> dict:
        return {"buf_decay": self.buf_decay, "output_scale": self.output_scale}

    def dp_event(self, rounds: int) -> dp_accounting.DpEvent:
        rounds = self._check_rounds(rounds)
        if rounds == 0:
            return dp_accounting.NoOpDpEvent()
        # σ is fixed by sens(T); the first r rounds have sensitivity sens(r) <= sens(T).
        ratio = 1.0 if rounds == self.rounds else self.sensitivity / self.sensitivity_at(rounds)
        return dp_accounting.GaussianDpEvent(self.noise_multiplier * ratio)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "clip_norm": self.clip_norm,
            "noise_multiplier": self.noise_multiplier,
            "participation": self.participation.to_dict(),
            "rounds": self.rounds,
            "buf_decay": list(self.buf_decay),
            "output_scale": list(self.output_scale),
            "sensitivity": self.sensitivity,
            "min_separation": self.participation.min_separation,
            "max_participations": self.participation.max_participations(self.rounds),
            "noise_std": self.noise_std,
            "accountant": self.accountant,
            "event": "dp_accounting.GaussianDpEvent(z) (no amplification; min-sep sensitivity, "
            "jax_privacy.matrix_factorization.toeplitz.minsep_sensitivity_squared)",
        }


def _as_cyclic(participation: Any) -> Any:
    """keyboard_fl.privacy.Participation("cyclic", q_b, N, min_separation=b) → CyclicPoisson(N, b, q_b)."""
    p = participation
    if getattr(p, "scheme", None) == "cyclic" and getattr(p, "population", None) and getattr(p, "min_separation", None):
        return CyclicPoisson(p.population, p.min_separation, p.sampling_prob)
    return p  # anything else is refused, with the reason, by check_participation


def _factory(cls: type, deterministic: bool):
    def make(*, clip_norm: float, noise_multiplier: float, participation: Any, rounds: int | None = None, **params):
        participation = check_participation(cls.name, _as_cyclic(participation), deterministic=deterministic)
        if rounds is None:
            raise ValueError(f"{cls.name}: rounds= is required (the number of rounds the factorisation covers)")
        return cls.build(
            clip_norm=clip_norm, noise_multiplier=noise_multiplier, participation=participation, rounds=rounds, **params
        )

    make.__doc__ = f"{cls.name} for keyboard_fl.privacy.make_mechanism (participation CyclicPoisson or 'cyclic')."
    return make


make_bandmf = _factory(BandMF, deterministic=False)
make_blt = _factory(BLT, deterministic=True)


def mechanism_from_dict(d: dict[str, Any]) -> BandMF | BLT:
    """Inverse of ``to_dict`` (derived entries such as ``noise_std`` are recomputed, not read)."""
    try:
        name = d["name"]
        common = {
            "clip_norm": d["clip_norm"],
            "noise_multiplier": d["noise_multiplier"],
            "participation": CyclicPoisson.from_dict(d["participation"]),
            "rounds": d["rounds"],
        }
        if name == BandMF.name:
            return BandMF(**common, coefs=tuple(d["coefs"]))
        if name == BLT.name:
            return BLT(**common, buf_decay=tuple(d["buf_decay"]), output_scale=tuple(d["output_scale"]))
    except KeyError as e:
        raise ValueError(f"mechanism {d.get('name')!r}: missing key {e}") from None
    raise ValueError(f"mechanism.name: unknown {name!r}; expected {BandMF.name!r} or {BLT.name!r}")


@functools.lru_cache(maxsize=256)
def _epsilon(event_repr: str, event: dp_accounting.DpEvent, delta: float) -> float:
    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    return float(accountant.compose(event).get_epsilon(delta))


def mechanism_epsilon(mech: BandMF | BLT, delta: float, rounds: int) -> float:
    """ε after ``rounds`` rounds at ``delta`` (add/remove one user, PLD)."""
    if rounds == 0:
        return 0.0
    if mech.noise_multiplier == 0:
        return math.inf
    event = mech.dp_event(rounds)
    return _epsilon(repr(event), event, float(delta))


def calibrate_noise_multiplier(
    mech: BandMF | BLT, target_epsilon: float, delta: float, rounds: int | None = None, *, rtol: float = 1e-3
) -> BandMF | BLT:
    """``mech`` with the smallest z (to ``rtol``) whose ε after ``rounds`` (default all) is <= ``target_epsilon``.

    Bracketing by doubling from z = 1, then bisection on log z; every trial
    is a full PLD ε, so the result's ε is <= the target.
    """
    rounds = mech.rounds if rounds is None else rounds
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ValueError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")

    def eps(z: float) -> float:
        return mechanism_epsilon(mech.with_noise_multiplier(z), delta, rounds)

    lo, hi = 1.0, 1.0
    while eps(hi) > target_epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            raise ValueError(f"{mech.name}: no z <= 1e4 reaches ε={target_epsilon} at δ={delta}")
    if lo == hi:
        while lo > 1e-2 and eps(lo) <= target_epsilon:
            hi, lo = lo, lo / 2
    while hi / lo > 1 + rtol:
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if eps(mid) <= target_epsilon else (mid, hi)
    return mech.with_noise_multiplier(hi)
