"""One federated round as a single jitted function: FedAvg and DP-FedAvg.

* FedAvg (McMahan et al. 2017, arXiv:1602.05629): the server update is the
  example-weighted mean of the client deltas (weights = tokens trained on).
* DP-FedAvg (McMahan et al. 2018, arXiv:1710.06963), user-level DP: each
  client's delta is clipped to L2 norm ``C``; the server adds
  ``N(0, (zC)^2 I)`` to the *unweighted* sum of clipped deltas and divides by
  the *fixed* expected cohort size ``qN`` (not the realized count), so adding
  or removing one user changes the pre-noise aggregate by at most ``C/(qN)``
  whatever the size of the user's data.
* Server optimizers (Reddi et al. 2021, "Adaptive Federated Optimization",
  arXiv:2003.00295): the averaged delta, negated, is fed to an optax
  optimizer as a pseudo-gradient. SGD(lr=1) is plain FedAvg; SGD with
  Nesterov momentum 0.9 and lr 1 is Gboard's server (Hard et al. 2018,
  arXiv:1811.03604); Adam is FedAdam.

The round is train → clip → sum → noise → server update:
:func:`keyboard_fl.fl.cohort_map.for_each_client` maps ``client_update`` +
``clip_update`` over a padded, masked cohort and sums (``vmap``, chunks of
clients, or ``shard_map`` over a device mesh with one ``psum``), with no
Python loop over clients; :func:`build_round` returns it as an
``init``/``apply`` pair (fedjax algorithms, optax transforms). A client whose delta contains NaN/Inf is masked
out of the aggregate and counted in ``RoundMetrics.nonfinite_clients``;
dropping it cannot raise the sensitivity (it is the same as that user not
contributing).

Privacy note: ``RoundMetrics`` diagnostics (losses, update norms, clipped
fraction) are computed from *un-noised* per-client values. They are for
simulation and tuning only; a deployment must not release them without its
own privacy accounting. Only ``ServerState.params`` is the DP output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from keyboard_fl.fl.canary_clients import canary_sum
from keyboard_fl.fl.client import LossFn, as_client_optimizer, client_update
from keyboard_fl.fl.cohort_map import ClientFn, ClientSlots, for_each_client
from keyboard_fl.fl.sharding import AXIS, check_capacity, replicate
from keyboard_fl.privacy.clipping import clip_update
from keyboard_fl.privacy.events import Participation
from keyboard_fl.privacy.mechanism import ClipStats, DpFedAvg, Mechanism
from keyboard_fl.typing import PyTree

__all__ = [
    "AggregatorConfig",
    "CohortBatch",
    "FederatedRound",
    "RoundMetrics",
    "ServerState",
    "as_mechanism",
    "build_round",
    "dp_mean_delta",
    "make_server_optimizer",
    "privatize_mean",
    "server_init",
    "server_update",
]


@dataclass(frozen=True)
class AggregatorConfig:
    """How client deltas are combined into one server update (a shorthand).

    ``"fedavg"`` is the non-private mean. ``"dp-fedavg"`` here is a shorthand
    for tests and benchmarks: it lowers to a :class:`~keyboard_fl.privacy.DpFedAvg`
    mechanism (:func:`as_mechanism`). Training runs pass a mechanism to
    :func:`build_round` directly: it is the one source of z, C and q.
    """

    # "fedavg": example-weighted mean, no clipping, no noise (not private).
    # "dp-fedavg": clip, unweighted sum, Gaussian noise, fixed denominator.
    mode: Literal["fedavg", "dp-fedavg"] = "fedavg"
    # C: L2 bound on each user's whole delta; the per-user sensitivity of the sum.
    clip_norm: float = 1.0
    # z: noise std on the sum is z*C; with q and the number of rounds it sets epsilon.
    noise_multiplier: float = 0.0
    # q*N: the fixed denominator for DP (never the realized count, which
    # would make the sensitivity depend on who else was sampled).
    expected_cohort: float = 1.0

    def __post_init__(self):
        if self.mode not in ("fedavg", "dp-fedavg"):
            raise ValueError(f"unknown aggregator mode {self.mode!r}")
        if self.mode == "fedavg" and self.noise_multiplier != 0:
            raise ValueError("fedavg mode adds no noise: set mode='dp-fedavg' or noise_multiplier=0")
        if self.mode == "dp-fedavg":
            if not self.clip_norm > 0:
                raise ValueError(f"clip_norm must be > 0, got {self.clip_norm}")
            if not self.noise_multiplier >= 0:
                raise ValueError(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
            if not self.expected_cohort > 0:
                raise ValueError(f"expected_cohort must be > 0, got {self.expected_cohort}")

    @property
    def noise_std(self) -> float:
        """Std of the noise added to the *sum* of clipped deltas (0 for fedavg)."""
        return self.noise_multiplier * self.clip_norm if self.mode == "dp-fedavg" else 0.0


class _FixedDenominator(DpFedAvg):
    """DpFedAvg with an explicit denominator (AggregatorConfig gives qN but not q, N)."""

    def __init__(self, clip_norm: float, noise_multiplier: float, expected_cohort: float):
        super().__init__(clip_norm, noise_multiplier, Participation("poisson", 1.0))
        object.__setattr__(self, "_denominator", float(expected_cohort))

    @property
    def expected_cohort(self) -> float:
        return self._denominator


def as_mechanism(agg: AggregatorConfig | Mechanism) -> Mechanism | None:
    """The DP mechanism of an aggregator (None for plain FedAvg)."""
    if isinstance(agg, AggregatorConfig):
        if agg.mode == "fedavg":
            return None
        return _FixedDenominator(agg.clip_norm, agg.noise_multiplier, agg.expected_cohort)
    if not isinstance(agg, Mechanism):
        raise TypeError(f"expected an AggregatorConfig or a privacy Mechanism, got {type(agg).__name__}")
    return agg


class ServerState(NamedTuple):
    params: PyTree  # global model parameters (the only DP output)
    opt_state: PyTree  # server optimizer state (momentum / Adam moments)
    round: jax.Array  # int32: rounds completed
    mech_state: PyTree = ()  # the privacy mechanism's state (adaptive clip norm, noise state); () if none


class CohortBatch(NamedTuple):
    """A padded cohort of ``K`` clients (``K`` = static capacity)."""

    inputs: jax.Array  # int32[K, S, B, T]
    targets: jax.Array  # int32[K, S, B, T]
    weights: jax.Array  # float32[K, S, B, T]; 0 marks padding tokens/steps
    mask: jax.Array  # bool or float[K]; False/0 marks padding clients
    canaries: Any = None  # CanarySlots: canary clients sampled this round (fl/canary_clients.py); None: none


class RoundMetrics(NamedTuple):
    cohort_size: jax.Array  # int32: realized number of sampled clients (mask.sum())
    included_clients: jax.Array  # int32: sampled clients whose delta entered the aggregate
    nonfinite_clients: jax.Array  # int32: sampled clients dropped for NaN/Inf deltas
    num_tokens: jax.Array  # float32: tokens trained on by included clients
    mean_client_loss: jax.Array  # float32: unweighted mean over included clients of their train loss
    train_loss: jax.Array  # float32: token-weighted mean train loss over included clients
    clipped_fraction: jax.Array  # float32: fraction of included deltas with norm > C (0 in fedavg)
    update_norm_mean: jax.Array  # float32: pre-clip delta norms over included clients
    update_norm_median: jax.Array  # float32
    update_norm_max: jax.Array  # float32
    clip_norm: jax.Array  # float32: C this round (adaptive clipping moves it; 0 in fedavg)
    noise_std: jax.Array  # float32: std of noise added to the sum (z*C; 0 in fedavg)
    noise_std_average: jax.Array  # float32: std of noise on the averaged delta, z*C/(qN)
    server_update_norm: jax.Array  # float32: L2 norm of the averaged (noised) delta


def make_server_optimizer(
    name: Literal["sgd", "nesterov", "adam"], lr: float, *, momentum: float = 0.9, eps: float = 1e-3
) -> optax.GradientTransformation:
    """Server optimizers over the pseudo-gradient ``-mean_delta``.

    ``"sgd"``: ``lr=1`` is plain FedAvg. ``"nesterov"``: SGD with Nesterov
    momentum (Gboard: lr 1.0, momentum 0.9). ``"adam"``: FedAdam (Reddi et al.
    2021), whose adaptivity ``eps`` (their tau) defaults to 1e-3.
    """
    if name == "sgd":
        return optax.sgd(lr)
    if name == "nesterov":
        return optax.sgd(lr, momentum=momentum, nesterov=True)
    if name == "adam":
        return optax.adam(lr, b1=0.9, b2=0.99, eps=eps)
    raise ValueError(f"unknown server optimizer {name!r}; expected 'sgd', 'nesterov' or 'adam'")


def server_init(
    params: PyTree, server_opt: optax.GradientTransformation, mechanism: AggregatorConfig | Mechanism | None = None
) -> ServerState:
    """Initial server state (with the mechanism's initial state). Copies ``params``,
    so a round that donates the state never invalidates the caller's arrays."""
    params = jax.tree.map(lambda x: jnp.array(x, copy=True), params)
    mech = as_mechanism(mechanism) if mechanism is not None else None
    return ServerState(
        params=params,
        opt_state=server_opt.init(params),
        round=jnp.zeros((), jnp.int32),
        mech_state=mech.init(params) if mech is not None else (),
    )


def dp_mean_delta(clipped_sum: PyTree, agg: AggregatorConfig | Mechanism, key: jax.Array) -> PyTree:
    """``(Σ clip(Δ_u, C) + N(0, (zC)² I)) / (q·N)`` for a stateless mechanism (DP-FedAvg,
    McMahan et al. 2018); see :func:`privatize_mean` for stateful ones."""
    return privatize_mean(clipped_sum, agg, key)[0]


def privatize_mean(
    clipped_sum: PyTree,
    agg: AggregatorConfig | Mechanism,
    key: jax.Array,
    stats: ClipStats | None = None,
    mech_state: PyTree = (),
) -> tuple[PyTree, PyTree]:
    """``(privatize(Σ clip(Δ_u, C)) / (q·N), new mechanism state)``: the mechanism's noise
    on the sum, the fixed expected cohort as denominator."""
    mech = as_mechanism(agg)
    if stats is None:
        stats = ClipStats(mech.clip_norm_of(mech_state), jnp.zeros((0,), jnp.float32), jnp.zeros((0,), bool))
    noised, new_state = mech.privatize(clipped_sum, stats, mech_state, key)
    return jax.tree.map(lambda x: x / mech.expected_cohort, noised), new_state


def server_update(state: ServerState, mean_delta: PyTree, server_opt: optax.GradientTransformation) -> ServerState:
    """One server step: ``-mean_delta`` is the pseudo-gradient of ``server_opt`` (Reddi et al. 2021)."""
    pseudo_grad = jax.tree.map(jnp.negative, mean_delta)
    updates, opt_state = server_opt.update(pseudo_grad, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state._replace(params=params, opt_state=opt_state, round=state.round + 1)


def _masked_median(x: jax.Array, valid: jax.Array) -> jax.Array:
    n = jnp.sum(valid, dtype=jnp.int32)
    s = jnp.sort(jnp.where(valid, x, jnp.inf))
    lo = s[jnp.maximum((n - 1) // 2, 0)]
    hi = s[jnp.maximum(n // 2, 0)]
    hi = jnp.where(n % 2 == 1, lo, hi)
    return jnp.where(n > 0, 0.5 * (lo + hi), 0.0)


class FederatedRound(NamedTuple):
    """A round as an ``init``/``apply`` pair (fedjax ``FederatedAlgorithm``, optax style)."""

    init: Callable[[PyTree], ServerState]  # params -> initial server state (on the mesh when sharded)
    apply: Callable[[ServerState, CohortBatch, jax.Array], tuple[ServerState, RoundMetrics]]  # jitted: has .lower


def _client_fn(loss_fn: LossFn, client_opt: optax.GradientTransformation, dp: bool) -> ClientFn:
    """One slot of the round: train, clip to the round's C, and its weight in the sum (0: not aggregated).

    The shared argument is ``(params, clip_norm)``: C is traced, since adaptive
    clipping moves it every round.
    """

    def train_and_clip(shared: tuple[PyTree, jax.Array], slot: ClientSlots):
        params, clip_norm = shared
        batches = {"inputs": slot.inputs, "targets": slot.targets, "weights": slot.weights}
        delta, cm = client_update(params, batches, slot.keys, loss_fn=loss_fn, client_opt=client_opt)
        clipped, norm = clip_update(delta, clip_norm)
        # A NaN/Inf anywhere in a delta (or a norm overflowing float32) makes
        # its global norm non-finite: such clients are excluded and counted.
        finite = jnp.isfinite(norm)
        valid = slot.sampled & finite
        if dp:  # unweighted sum of clipped deltas
            update, weight = clipped, valid.astype(jnp.float32)
        else:  # token-weighted sum of raw deltas
            update, weight = delta, jnp.where(valid, cm.num_tokens, 0.0)
        stats = {
            "finite": finite,
            "valid": valid,
            "norm": jnp.where(valid, norm, 0.0),
            "num_tokens": jnp.where(valid, cm.num_tokens, 0.0),
            "train_loss": jnp.where(valid, cm.train_loss, 0.0),
        }
        return update, weight, stats

    return train_and_clip


def _round_metrics(
    st: dict, sampled: jax.Array, mean_delta: PyTree, clip_norm, noise_std, expected_cohort
) -> RoundMetrics:
    """Diagnostics of one round from the per-slot stats (un-noised: see the module note).
    ``clip_norm`` / ``noise_std`` are None in FedAvg."""
    dp = clip_norm is not None
    valid, norms = st["valid"], st["norm"]
    tokens = jnp.sum(st["num_tokens"])
    n_valid = jnp.sum(valid, dtype=jnp.int32)
    n_safe = jnp.maximum(n_valid, 1).astype(jnp.float32)
    clipped_frac = jnp.sum(valid & (norms > clip_norm)) / n_safe if dp else jnp.zeros((), jnp.float32)
    return RoundMetrics(
        cohort_size=jnp.sum(sampled, dtype=jnp.int32),
        included_clients=n_valid,
        nonfinite_clients=jnp.sum(sampled & ~st["finite"], dtype=jnp.int32),
        num_tokens=tokens,
        mean_client_loss=jnp.sum(st["train_loss"]) / n_safe,
        train_loss=jnp.sum(st["train_loss"] * st["num_tokens"]) / jnp.maximum(tokens, 1.0),
        clipped_fraction=jnp.asarray(clipped_frac, jnp.float32),
        update_norm_mean=jnp.sum(norms) / n_safe,
        update_norm_median=_masked_median(norms, valid),
        update_norm_max=jnp.max(norms),
        clip_norm=jnp.asarray(clip_norm if dp else 0.0, jnp.float32),
        noise_std=jnp.asarray(noise_std if dp else 0.0, jnp.float32),
        noise_std_average=jnp.asarray(noise_std / expected_cohort if dp else 0.0, jnp.float32),
        server_update_norm=optax.tree.norm(mean_delta).astype(jnp.float32),
    )


def _aggregate(
    total: PyTree, st: dict, mech: Mechanism | None, mech_state, clip_norm, noise_key: jax.Array, extra_tokens=0.0
):
    """The round's mean delta from the clients' sum: ``(mean_delta, mech_state, noise_std)``.

    With a mechanism, :func:`privatize_mean` noises the sum of clipped deltas
    and advances its state; FedAvg divides the token-weighted sum by the
    round's tokens (plus ``extra_tokens``, the canary clients' weight;
    ``noise_std`` None, state unchanged).
    """
    if mech is None:
        denom = jnp.maximum(jnp.sum(st["num_tokens"]) + extra_tokens, 1e-12)
        return jax.tree.map(lambda x: x / denom, total), mech_state, None
    noise_std = mech.noise_std_of(mech_state)
    stats = ClipStats(clip_norm, st["norm"], st["valid"])
    mean_delta, mech_state = privatize_mean(total, mech, noise_key, stats, mech_state)
    return mean_delta, mech_state, noise_std


def _add_canaries(total: PyTree, st: dict, canaries, params: PyTree, clip_norm) -> tuple[PyTree, jax.Array]:
    """The sampled canary clients' updates added to the clients' sum: ``(total, their FedAvg weight)``.

    DP: each canary is one more clipped update in the unweighted sum (the
    denominator stays qN). FedAvg: each weighs as the round's average real
    client (its tokens added to the denominator).
    """
    c_sum, n = canary_sum(canaries, params, clip_norm)
    if clip_norm is not None:
        return jax.tree.map(jnp.add, total, c_sum), jnp.zeros((), jnp.float32)
    w = jnp.sum(st["num_tokens"]) / jnp.maximum(jnp.sum(st["valid"]), 1).astype(jnp.float32)
    return jax.tree.map(lambda t, c: t + w * c, total, c_sum), w * n


def _compiled(round_fn, mesh: Mesh | None, *, jit: bool, donate: bool):
    """``round_fn`` jitted (state donated if ``donate``); on a mesh, state and key replicated."""
    if not jit:
        return round_fn
    donate_argnums = (0,) if donate else ()
    if mesh is not None:
        rep = NamedSharding(mesh, P())  # the cohort's split is set inside round_fn, after the capacity check
        return jax.jit(round_fn, in_shardings=(rep, None, rep), out_shardings=rep, donate_argnums=donate_argnums)
    return jax.jit(round_fn, donate_argnums=donate_argnums)


def build_round(
    loss_fn: LossFn,
    client_opt: optax.GradientTransformation | float,
    server_opt: optax.GradientTransformation,
    agg: AggregatorConfig | Mechanism,
    *,
    client_chunk: int | None = None,
    jit: bool = True,
    donate: bool = True,
    mesh: Mesh | None = None,
) -> FederatedRound:
    """Builds the round: ``init(params) -> state`` and ``apply(state, cohort, key) -> (state, metrics)``.

    ``apply`` reads train → clip → sum (:func:`keyboard_fl.fl.cohort_map.for_each_client`)
    → noise → server update. The key is split once into a client key (further
    split per cohort slot) and a noise key, so the noise never reuses client
    randomness.

    Args:
        loss_fn: ``loss_fn(params, batch) -> (loss, num_tokens)``.
        client_opt: client optax optimizer, or a float learning rate for SGD.
        server_opt: server optax optimizer (see :func:`make_server_optimizer`).
        agg: ``AggregatorConfig`` (FedAvg, or the DP-FedAvg shorthand) or a
          privacy :class:`~keyboard_fl.privacy.Mechanism`, the one source of
          z, C and q; its state lives in ``ServerState.mech_state``.
        client_chunk: clients trained together (``vmap`` inside a loop over
          chunks, summing as it goes; chunks holding no sampled client are
          skipped). Must divide the cohort capacity ``K`` (per device). None:
          all at once. Same result as unchunked up to float rounding.
        jit: ``apply`` is the ``jax.jit``-ed function (with ``.lower``).
        donate: donate the server state buffers to the jitted call (do not
          reuse a state after passing it in; ``init`` copies params).
        mesh: a 1-D mesh named ``"clients"`` (:func:`keyboard_fl.fl.sharding.client_mesh`)
          to split the cohort across its devices (``shard_map``, one ``psum``).
          ``K`` must then be a multiple of ``mesh.size * client_chunk``. State,
          key and outputs are replicated, the cohort split; ``apply`` places
          host inputs itself. A mesh of one device (or None) gives the
          unsharded round.
    """
    client_opt = as_client_optimizer(client_opt)
    mech = as_mechanism(agg)
    dp = mech is not None
    sharded = mesh is not None and mesh.size > 1
    if sharded and tuple(mesh.axis_names) != (AXIS,):
        raise ValueError(f"mesh must be 1-D with axis {AXIS!r} (client_mesh()), got axes {mesh.axis_names}")
    train_and_clip = _client_fn(loss_fn, client_opt, dp)

    def round_fn(state: ServerState, cohort: CohortBatch, key: jax.Array):
        canaries, cohort = cohort.canaries, cohort._replace(canaries=None)
        k = cohort.mask.shape[0]
        if sharded:  # at trace time, so a capacity the devices can't split gets our message
            check_capacity(k, mesh.size, client_chunk)
            cohort = jax.lax.with_sharding_constraint(cohort, NamedSharding(mesh, P(AXIS)))
        client_key, noise_key = jax.random.split(key)
        sampled = cohort.mask.astype(bool)
        slots = ClientSlots(cohort.inputs, cohort.targets, cohort.weights, jax.random.split(client_key, k), sampled)
        clip_norm = mech.clip_norm_of(state.mech_state) if dp else jnp.ones((), jnp.float32)
        total, st = for_each_client(
            train_and_clip, (state.params, clip_norm), slots, chunk=client_chunk, mesh=mesh if sharded else None
        )
        extra = 0.0
        if canaries is not None:  # after the real users' sum, before the noise (fl/canary_clients.py)
            total, extra = _add_canaries(total, st, canaries, state.params, clip_norm if dp else None)
        mean_delta, mech_state, noise_std = _aggregate(total, st, mech, state.mech_state, clip_norm, noise_key, extra)
        new_state = server_update(state, mean_delta, server_opt)._replace(mech_state=mech_state)
        metrics = _round_metrics(
            st,
            sampled,
            mean_delta,
            clip_norm if dp else None,
            noise_std,
            mech.expected_cohort if dp else None,
        )
        return new_state, metrics

    def init(params: PyTree) -> ServerState:
        state = server_init(params, server_opt, agg)
        return replicate(state, mesh) if sharded else state

    return FederatedRound(init=init, apply=_compiled(round_fn, mesh if sharded else None, jit=jit, donate=donate))
