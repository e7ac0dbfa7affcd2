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

The round is ``vmap(client_update)`` over a padded, masked cohort →
``vmap(clip_update)`` → masked sum → noise → divide → server optimizer, with
no Python loop over clients. With a device mesh the cohort axis is split
across devices and the masked sum becomes a ``psum``
(:mod:`keyboard_fl.fl.sharding`). A client whose delta contains NaN/Inf is masked
out of the aggregate and counted in ``RoundMetrics.nonfinite_clients``;
dropping it cannot raise the sensitivity (it is the same as that user not
contributing).

Privacy note: ``RoundMetrics`` diagnostics (losses, update norms, clipped
fraction) are computed from *un-noised* per-client values. They are for
simulation and tuning only; a deployment must not release them without its
own privacy accounting. Only ``ServerState.params`` is the DP output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from keyboard_fl.fl.client import LossFn, as_client_optimizer, client_update
from keyboard_fl.fl.sharding import AXIS, check_capacity, replicate, shard_cohort
from keyboard_fl.privacy.clipping import clip_update
from keyboard_fl.privacy.events import Participation
from keyboard_fl.privacy.mechanism import ClipStats, DpFedAvg, Mechanism

PyTree = Any

__all__ = [
    "AggregatorConfig",
    "CohortBatch",
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
        params=params, opt_state=server_opt.init(params), round=jnp.zeros((), jnp.int32),
        mech_state=mech.init(params) if mech is not None else (),
    )


def dp_mean_delta(clipped_sum: PyTree, agg: AggregatorConfig | Mechanism, key: jax.Array) -> PyTree:
    """``(Σ clip(Δ_u, C) + N(0, (zC)² I)) / (q·N)`` for a stateless mechanism (DP-FedAvg,
    McMahan et al. 2018); see :func:`privatize_mean` for stateful ones."""
    return privatize_mean(clipped_sum, agg, key)[0]


def privatize_mean(
    clipped_sum: PyTree, agg: AggregatorConfig | Mechanism, key: jax.Array, stats: ClipStats | None = None,
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


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
    """Reshapes a per-client vector ``[K]`` to broadcast against ``x [K, ...]``."""
    return v.reshape(v.shape + (1,) * (x.ndim - 1))


def _masked_median(x: jax.Array, valid: jax.Array) -> jax.Array:
    n = jnp.sum(valid, dtype=jnp.int32)
    s = jnp.sort(jnp.where(valid, x, jnp.inf))
    lo = s[jnp.maximum((n - 1) // 2, 0)]
    hi = s[jnp.maximum(n // 2, 0)]
    hi = jnp.where(n % 2 == 1, lo, hi)
    return jnp.where(n > 0, 0.5 * (lo + hi), 0.0)


def build_round(
    loss_fn: LossFn,
    client_opt: optax.GradientTransformation | float,
    server_opt: optax.GradientTransformation,
    agg: AggregatorConfig,
    *,
    client_chunk: int | None = None,
    jit: bool = True,
    donate: bool = True,
    mesh: Mesh | None = None,
) -> Callable[[ServerState, CohortBatch, jax.Array], tuple[ServerState, RoundMetrics]]:
    """Builds ``round_fn(state, cohort, key) -> (new_state, metrics)``.

    The key is split once into a client key (further split per cohort slot)
    and a noise key, so the noise never reuses client randomness.

    Args:
        loss_fn: ``loss_fn(params, batch) -> (loss, num_tokens)``.
        client_opt: client optax optimizer, or a float learning rate for SGD.
        server_opt: server optax optimizer (see :func:`make_server_optimizer`).
        agg: ``AggregatorConfig`` (FedAvg, or the DP-FedAvg shorthand) or a
          privacy :class:`~keyboard_fl.privacy.Mechanism`, the one source of
          z, C and q; its state lives in ``ServerState.mech_state``.
        client_chunk: if set, clients are trained ``client_chunk`` at a time
          (``vmap`` inside a loop over chunks, summing as it goes), so memory
          holds ``client_chunk`` deltas instead of ``K`` and chunks holding no
          sampled client are skipped. Must divide the cohort capacity ``K``.
          Same result as unchunked up to float rounding.
        jit: return the ``jax.jit``-ed function.
        donate: donate the server state buffers to the jitted call (do not
          reuse a state after passing it in; :func:`server_init` copies params).
        mesh: a 1-D mesh named ``"clients"`` (:func:`keyboard_fl.fl.sharding.client_mesh`)
          to split the cohort across its devices (``shard_map``, one ``psum``;
          see :mod:`keyboard_fl.fl.sharding`). The capacity ``K`` must then be
          a multiple of ``mesh.size * client_chunk``. State, key and outputs
          are replicated, the cohort split; the returned function puts inputs
          not yet on the mesh there itself. A mesh of one device (or None)
          gives the unsharded round.
    """
    client_opt = as_client_optimizer(client_opt)
    mech = as_mechanism(agg)
    dp = mech is not None
    sharded = mesh is not None and mesh.size > 1
    if sharded and tuple(mesh.axis_names) != (AXIS,):
        raise ValueError(f"mesh must be 1-D with axis {AXIS!r} (client_mesh()), got axes {mesh.axis_names}")

    def one_client(params, inputs, targets, weights, key):
        batches = {"inputs": inputs, "targets": targets, "weights": weights}
        return client_update(params, batches, key, loss_fn=loss_fn, client_opt=client_opt)

    def clients(params, inputs, targets, weights, keys, sampled, clip_norm=1.0):
        """Trains a group of clients; returns their contribution to the sum and per-client stats."""
        deltas, cm = jax.vmap(one_client, in_axes=(None, 0, 0, 0, 0))(params, inputs, targets, weights, keys)
        clipped, norms = jax.vmap(clip_update, in_axes=(0, None))(deltas, clip_norm)
        # A NaN/Inf anywhere in a delta (or a norm overflowing float32) makes
        # its global norm non-finite: such clients are excluded and counted.
        finite = jnp.isfinite(norms)
        valid = sampled & finite
        if dp:  # unweighted sum of clipped deltas
            w = valid.astype(jnp.float32)
            contrib = clipped
        else:  # token-weighted sum of raw deltas
            w = jnp.where(valid, cm.num_tokens, 0.0)
            contrib = deltas
        # `where`, not a product alone: NaN * 0 is NaN.
        total = jax.tree.map(
            lambda x: jnp.sum(jnp.where(_bcast(valid, x), _bcast(w, x) * x, 0.0), axis=0), contrib
        )
        stats = {
            "finite": finite,
            "valid": valid,
            "norm": jnp.where(valid, norms, 0.0),
            "num_tokens": jnp.where(valid, cm.num_tokens, 0.0),
            "train_loss": jnp.where(valid, cm.train_loss, 0.0),
        }
        return total, stats

    def cohort_sum(params, inputs, targets, weights, keys, sampled, clip_norm=1.0):
        """Trains ``k`` client slots (all, or ``client_chunk`` at a time); returns
        their summed contribution and per-slot stats ``[k]``."""
        k = sampled.shape[0]
        args = (inputs, targets, weights, keys, sampled)
        if client_chunk is None or client_chunk >= k:
            return clients(params, *args, clip_norm)
        if k % client_chunk:
            raise ValueError(f"client_chunk={client_chunk} must divide the cohort capacity {k}")
        n = k // client_chunk
        chunked = jax.tree.map(lambda x: x.reshape((n, client_chunk) + x.shape[1:]), args)

        # A chunk with no sampled client is skipped at run time (lax.cond
        # inside a loop, not under vmap), so a padded capacity costs no
        # compute: the round's time follows the realized cohort.
        stats_shape = jax.eval_shape(lambda c: clients(params, *c, clip_norm)[1], jax.tree.map(lambda x: x[0], chunked))

        def body(i, carry):
            acc, stats = carry
            chunk = jax.tree.map(lambda x: x[i], chunked)

            def run(_):
                return clients(params, *chunk, clip_norm)

            def skip(_):
                zeros = jax.tree.map(jnp.zeros_like, acc)
                return zeros, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), stats_shape)

            part, chunk_stats = jax.lax.cond(jnp.any(chunk[-1]), run, skip, None)
            acc = jax.tree.map(jnp.add, acc, part)
            stats = jax.tree.map(lambda a, b: a.at[i].set(b), stats, chunk_stats)
            return acc, stats

        zeros = jax.tree.map(jnp.zeros_like, params)
        stats0 = jax.tree.map(lambda s: jnp.zeros((n,) + s.shape, s.dtype), stats_shape)
        total, st = jax.lax.fori_loop(0, n, body, (zeros, stats0))
        return total, jax.tree.map(lambda x: x.reshape((k,) + x.shape[2:]), st)

    def sharded_cohort_sum(params, *args, clip_norm=1.0):
        """``cohort_sum`` split over the mesh: slot j on device j % D, psum of the sums."""
        d = mesh.size
        k = args[-1].shape[0]
        check_capacity(k, d, client_chunk)
        # View [k] as [k/D, D] and shard the second axis: device i holds slots
        # i, i+D, i+2D, ... (the sampled clients come first: strided = balanced).
        view = jax.tree.map(lambda x: x.reshape((k // d, d) + x.shape[1:]), args)

        def per_device(params, clip_norm, *local):
            local = jax.tree.map(lambda x: x[:, 0], local)
            total, st = cohort_sum(params, *local, clip_norm)
            return jax.lax.psum(total, AXIS), jax.tree.map(lambda x: x[:, None], st)

        spec = P(None, AXIS)
        total, st = jax.shard_map(
            per_device, mesh=mesh, in_specs=(P(), P()) + (spec,) * len(args), out_specs=(P(), spec),
            check_vma=False,  # the chunk loop's carry starts replicated and becomes per-device
        )(params, clip_norm, *view)
        return total, jax.tree.map(lambda x: x.reshape((k,) + x.shape[2:]), st)

    def round_fn(state: ServerState, cohort: CohortBatch, key: jax.Array):
        client_key, noise_key = jax.random.split(key)
        k = cohort.mask.shape[0]
        client_keys = jax.random.split(client_key, k)
        sampled = cohort.mask.astype(bool)
        args = (cohort.inputs, cohort.targets, cohort.weights, client_keys, sampled)
        clip_norm = mech.clip_norm_of(state.mech_state) if dp else 1.0
        total, st = (sharded_cohort_sum if sharded else cohort_sum)(state.params, *args, clip_norm=clip_norm)

        valid, norms = st["valid"], st["norm"]
        tokens = jnp.sum(st["num_tokens"])
        mech_state = state.mech_state
        if dp:
            noise_std = mech.noise_std_of(mech_state)
            mean_delta, mech_state = privatize_mean(total, mech, noise_key, ClipStats(clip_norm, norms, valid), mech_state)
        else:
            denom = jnp.maximum(tokens, 1e-12)
            mean_delta = jax.tree.map(lambda x: x / denom, total)
        new_state = server_update(state, mean_delta, server_opt)._replace(mech_state=mech_state)

        n_valid = jnp.sum(valid, dtype=jnp.int32)
        n_safe = jnp.maximum(n_valid, 1).astype(jnp.float32)
        clipped_frac = jnp.sum(valid & (norms > clip_norm)) / n_safe if dp else jnp.zeros((), jnp.float32)
        metrics = RoundMetrics(
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
            noise_std_average=jnp.asarray(noise_std / mech.expected_cohort if dp else 0.0, jnp.float32),
            server_update_norm=optax.tree.norm(mean_delta).astype(jnp.float32),
        )
        return new_state, metrics

    donate_argnums = (0,) if donate else ()
    if jit and sharded:
        rep, cli = NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS))
        jitted = jax.jit(round_fn, in_shardings=(rep, cli, rep), out_shardings=rep, donate_argnums=donate_argnums)

        def sharded_round(state, cohort, key):
            check_capacity(cohort.mask.shape[0], mesh.size, client_chunk)  # before jit's own, vaguer, error
            # Places what is not on the mesh yet (a no-op for arrays already there,
            # e.g. the state a previous round returned, so donation still works).
            return jitted(replicate(state, mesh), shard_cohort(cohort, mesh), replicate(key, mesh))

        sharded_round.lower = jitted.lower
        return sharded_round
    if jit:
        return jax.jit(round_fn, donate_argnums=donate_argnums)
    return round_fn
