"""Correlated-noise strategies for DP-FTRL: optimisation, sensitivity, error.

Matrix-factorisation DP-FTRL (Kairouz et al. 2021, arXiv:2103.00039;
Denisov et al. 2022, arXiv:2202.08312) releases the prefix sums ``A x`` of the
per-round clipped sums ``x`` as ``B (C x + σ Z)`` with ``A = B C``: round
``t``'s sum gets the noise ``σ (C⁻¹ Z)_t``, the model after ``t`` rounds
(SGD, lr 1) carries ``σ (A C⁻¹ Z)_t``. ``σ = z · clip · sens(C)``, where
``sens(C)`` is the largest ``‖C u‖`` over the participation patterns ``u``
the sampler allows.

Two strategy families, both Toeplitz and taken from jax-privacy 2.0.0:

* **banded** (Choquette-Choo et al. 2023, arXiv:2306.08153): ``C`` has ``b``
  bands (``toeplitz.optimize_banded_toeplitz``), its columns normalised to
  norm 1 for the run length ``n``; with ``b``-cyclic participation two
  participations never share a row of ``C``, which is what lets amplified
  BandMF be accounted as ``ceil(n/b)`` Poisson-sampled Gaussian mechanisms.
* **BLT**, buffered linear Toeplitz (Dvijotham et al. 2024, arXiv:2404.16706;
  McMahan, Xu, Zhang 2024, arXiv:2408.08868): ``buffered_toeplitz.optimize``
  for (k, b)-min-sep participation; the noise needs only a few buffers.

Optimisation runs in float64 (``jax.enable_x64`` only around it); the
results are plain Python floats, and the streaming noise runs in float32.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax_privacy.matrix_factorization import buffered_toeplitz, toeplitz
from jax_privacy.matrix_factorization import streaming_matrix as sm

__all__ = [
    "blt_sensitivity_squared",
    "bruteforce_sensitivity_squared",
    "cyclic_patterns",
    "effective_iid_std",
    "minsep_patterns",
    "noise_error_profile",
    "noising_matrix",
    "optimize_bandmf_coefs",
    "optimize_blt",
    "strategy_matrix",
]


def optimize_bandmf_coefs(rounds: int, bands: int, *, max_optimizer_steps: int = 250) -> tuple[float, ...]:
    """Banded Toeplitz strategy (``bands`` coefficients, L2 norm 1) minimising mean prefix-sum error."""
    if not 1 <= bands <= rounds:
        raise ValueError(f"bands must be in [1, rounds={rounds}], got {bands}")
    if bands == 1:
        return (1.0,)
    with jax.enable_x64(True):
        coef = toeplitz.optimize_banded_toeplitz(rounds, bands, max_optimizer_steps=max_optimizer_steps)
        return tuple(float(c) for c in np.asarray(coef))


def optimize_blt(
    rounds: int, min_sep: int, max_participations: int, *, max_buffers: int = 6
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """BLT strategy ``C`` (buf_decay, output_scale) minimising mean error under (k, b)-min-sep."""
    with jax.enable_x64(True):
        blt = buffered_toeplitz.optimize(
            n=rounds, min_sep=min_sep, max_participations=max_participations, error="mean", max_buffers=max_buffers
        )
        return tuple(map(float, np.asarray(blt.buf_decay))), tuple(map(float, np.asarray(blt.output_scale)))


def _blt(buf_decay, output_scale) -> buffered_toeplitz.BufferedToeplitz:
    return buffered_toeplitz.BufferedToeplitz.build(buf_decay, output_scale, dtype=jnp.float64)


def blt_sensitivity_squared(
    buf_decay: tuple[float, ...], output_scale: tuple[float, ...], rounds: int, min_sep: int, max_participations: int
) -> float:
    """``max_u ‖C u‖²`` over (k, b)-min-sep patterns of a BLT ``C`` (arXiv:2405.13763, Thm. 2).

    Exact for Toeplitz ``C`` with non-negative, non-increasing coefficients,
    which jax-privacy checks (it raises otherwise).
    """
    with jax.enable_x64(True):
        coefs = _blt(buf_decay, output_scale).toeplitz_coefs(rounds)
        return float(toeplitz.minsep_sensitivity_squared(coefs, min_sep, max_participations, n=rounds))


def noising_matrix(kind: str, params: dict, rounds: int) -> sm.StreamingMatrix:
    """``C⁻¹`` as a jax-privacy StreamingMatrix, in float32, for ``kind`` in {"bandmf", "blt"}.

    ``params``: ``{"coefs": …}`` (banded; column-normalised for ``rounds``) or
    ``{"buf_decay": …, "output_scale": …}`` (BLT of ``C``; ``C⁻¹ x`` is then
    computed from C's own buffers, arXiv:2408.08868 Alg. 3).
    """
    if kind == "bandmf":
        coef = jnp.asarray(params["coefs"], jnp.float32)
        return toeplitz.inverse_as_streaming_matrix(coef, column_normalize_for_n=rounds)
    if kind == "blt":
        blt = buffered_toeplitz.BufferedToeplitz(
            buf_decay=jnp.asarray(params["buf_decay"], jnp.float32),
            output_scale=jnp.asarray(params["output_scale"], jnp.float32),
        )
        return blt.inverse_as_streaming_matrix()
    raise ValueError(f"unknown correlated-noise kind {kind!r}; expected 'bandmf' or 'blt'")


def strategy_matrix(kind: str, params: dict, rounds: int) -> np.ndarray:
    """``C`` (rounds × rounds, float64 numpy): the inverse of :func:`noising_matrix`'s matrix."""
    with jax.enable_x64(True):
        if kind == "bandmf":
            c = toeplitz.materialize_lower_triangular(jnp.asarray(params["coefs"], jnp.float64), n=rounds)
            return np.asarray(c / jnp.linalg.norm(c, axis=0))
        return np.asarray(_blt(params["buf_decay"], params["output_scale"]).materialize(rounds))


def bruteforce_sensitivity_squared(c: np.ndarray, patterns: list[tuple[int, ...]]) -> float:
    """``max ‖C u‖²`` over 0/1 participation vectors ``u`` (each given by its rounds) and their signs.

    Every sign pattern is tried too, so the maximum holds without assuming
    ``CᵀC >= 0``; meant for small matrices in tests.
    """
    best = 0.0
    for rounds_in in patterns:
        for signs in itertools.product((1.0, -1.0), repeat=max(len(rounds_in) - 1, 0)):
            u = np.zeros(c.shape[1])
            u[list(rounds_in)] = (1.0, *signs)
            best = max(best, float(np.sum((c @ u) ** 2)))
    return best


def noise_error_profile(kind: str | None, params: dict | None, rounds: int) -> dict[str, np.ndarray]:
    """Per-round squared norms of the rows of ``C⁻¹`` and of ``A C⁻¹`` (A = prefix sum).

    Multiply by ``σ²`` for the variance (per coordinate) of round ``t``'s added
    noise and of the noise accumulated in the model after ``t`` rounds.
    ``kind=None`` is independent noise (DP-FedAvg): ``1`` and ``t``.
    """
    if kind is None:
        return {"round": np.ones(rounds), "prefix": np.arange(1, rounds + 1, dtype=np.float64)}
    with jax.enable_x64(True):
        cinv = np.linalg.inv(strategy_matrix(kind, params, rounds))
    return {"round": np.sum(cinv**2, axis=1), "prefix": np.sum(np.cumsum(cinv, axis=0) ** 2, axis=1)}


def minsep_patterns(rounds: int, min_sep: int, max_participations: int) -> list[tuple[int, ...]]:
    """All participation patterns with at most ``k`` rounds, ``>= b`` apart (for brute force)."""
    out: list[tuple[int, ...]] = []
    for k in range(1, max_participations + 1):
        for combo in itertools.combinations(range(rounds), k):
            if all(b - a >= min_sep for a, b in itertools.pairwise(combo)):
                out.append(combo)
    return out


def cyclic_patterns(rounds: int, num_bands: int) -> list[tuple[int, ...]]:
    """The participation pattern of each band under b-cyclic participation, and its subsets."""
    out = []
    for band in range(num_bands):
        full = tuple(range(band, rounds, num_bands))
        for k in range(1, len(full) + 1):
            out.extend(itertools.combinations(full, k))
    return out


def effective_iid_std(prefix: np.ndarray) -> float:
    """Per-round iid noise multiplier giving the same mean prefix-sum variance: ``√(mean e_t / mean t)``."""
    t = np.arange(1, len(prefix) + 1)
    return math.sqrt(float(np.mean(prefix) / np.mean(t)))
