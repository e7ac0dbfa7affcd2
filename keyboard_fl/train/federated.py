"""The federated training loop: sample, gather, run the jitted round, account, checkpoint.

The round itself (:func:`keyboard_fl.fl.build_round`) is one jitted function;
this host loop only feeds it. Each round's randomness is derived from the
run's seed and the round number through :mod:`keyboard_fl.rng` (streams
``COHORT``, ``ROUND``, ``CLIENT_DATA``, ``FAULTS``), so a run resumed from any
checkpoint replays exactly the rounds an uninterrupted run would have.

Privacy bookkeeping (DESIGN.md §3): users are Poisson-sampled with
probability q; the ledger composes one sampled Gaussian mechanism per round
and is stored in every checkpoint. Only clipped, noised aggregates reach the
server state; the host loop never looks at a user's text, only at the rows
the client function trains on.

Client faults (:mod:`keyboard_fl.fl.faults`, ``cfg.dropout_prob`` and
``cfg.straggler_deadline``) are drawn after sampling from their own stream
(``Stream.FAULTS`` and the round), so they are as deterministic and resume-safe as the rest;
the faulted users are masked out of the cohort and counted per round
(``dropped_clients``, ``stragglers``; ``sampled_clients`` is the Poisson
draw, ``cohort_size`` the users that reported). The ledger keeps q.

The cohort axis is sharded over ``cfg.devices`` devices (None: all visible;
:mod:`keyboard_fl.fl.sharding`), the capacity padded to a multiple of
devices × ``client_chunk``. On one device nothing changes; on several the
result equals the one-device run up to float summation order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Callable

import jax.numpy as jnp
import numpy as np

from keyboard_fl import checkpoint
from keyboard_fl.config import FederatedConfig
from keyboard_fl.fl.faults import apply_faults, fault_key
from jax.sharding import Mesh

from keyboard_fl.fl.round import AggregatorConfig, FederatedRound, build_round, make_server_optimizer
from keyboard_fl.fl.sampling import cohort_capacity, sample_cohort_exact
from keyboard_fl.fl.sharding import capacity_multiple, client_mesh
from keyboard_fl.models import Params
from keyboard_fl.runs import DP_FEDAVG, FEDAVG
from keyboard_fl.rng import Stream, generator, key as stream_key
from keyboard_fl.privacy import PrivacyLedger, calibrate_noise_multiplier, default_delta
from keyboard_fl.train.stream import RowsByUser, gather_cohort, prefetched

__all__ = ["DpSetup", "gather_cohort", "resolve_dp", "round_metrics_dict", "train_federated"]


@dataclasses.dataclass(frozen=True)
class DpSetup:
    """The resolved privacy parameters of a run."""

    noise_multiplier: float
    sampling_prob: float
    delta: float
    population: int
    clip_norm: float


def resolve_dp(cfg: FederatedConfig, population: int, private: bool) -> DpSetup:
    """q from the expected cohort, δ default below 1/N, z given or calibrated to the target ε."""
    q = cfg.sampling_prob(population)
    delta = cfg.delta if cfg.delta is not None else default_delta(population)
    if not private:
        return DpSetup(0.0, q, delta, population, float("inf"))
    if cfg.noise_multiplier is not None:
        z = float(cfg.noise_multiplier)
    elif cfg.target_epsilon is not None:
        z = calibrate_noise_multiplier(cfg.target_epsilon, q, cfg.rounds, delta)
    else:
        raise ValueError("dp-fedavg needs a noise_multiplier or a target_epsilon")
    return DpSetup(z, q, delta, population, cfg.clip_norm)


def make_round(loss_fn, cfg: FederatedConfig, dp: DpSetup, *, private: bool, population: int,
               mesh: Mesh | None = None) -> FederatedRound:
    """The run's round: its aggregator from ``dp``, its cohort sharded over ``mesh``
    (default ``client_mesh(cfg.devices)``; one device: the unsharded round)."""
    agg = AggregatorConfig(
        mode=DP_FEDAVG if private else FEDAVG,
        clip_norm=dp.clip_norm if private else 1.0,
        noise_multiplier=dp.noise_multiplier,
        expected_cohort=dp.sampling_prob * population,
    )
    server_opt = make_server_optimizer(cfg.server_optimizer, cfg.server_lr)
    mesh = mesh if mesh is not None else client_mesh(cfg.devices)
    return build_round(loss_fn, cfg.client_lr, server_opt, agg, client_chunk=cfg.client_chunk, mesh=mesh)


def round_metrics_dict(m) -> dict[str, float]:
    return {k: float(v) for k, v in m._asdict().items()}


def train_federated(
    loss_fn,
    params: Params,
    rows: RowsByUser,
    cfg: FederatedConfig,
    dp: DpSetup,
    *,
    private: bool,
    seed: int,
    ckpt_dir,
    resume: bool,
    on_round: Callable[[int, dict, Params, PrivacyLedger], None] | None = None,
    prefetch: bool = True,
    fl_round: FederatedRound | None = None,
) -> tuple[Params, PrivacyLedger, list[dict]]:
    """Run rounds up to ``cfg.rounds``; checkpoint every ``cfg.checkpoint_every``; return params, ledger, history.

    ``rows`` gives a user's rows by index (streamed or eager: same result);
    with ``prefetch`` the next round's cohort is made while this one trains.
    The history holds the rounds run by this call (a resumed run: those after
    its checkpoint); the run's full log is ``on_round``'s to keep.
    ``fl_round``: a prebuilt :func:`make_round` for this configuration (tests
    reuse one compiled round across runs); None builds it.
    """
    n = len(rows)
    mesh = client_mesh(cfg.devices)
    fl_round = fl_round or make_round(loss_fn, cfg, dp, private=private, population=n, mesh=mesh)
    state = fl_round.init(params)
    ledger = PrivacyLedger(dp.noise_multiplier, dp.sampling_prob, dp.delta, n) if private else None
    history: list[dict] = []
    start = 0
    if resume:
        found = checkpoint.load_latest(ckpt_dir, (state.params, state.opt_state))
        if found is not None:
            start, (p, o), meta = found
            state = state._replace(params=p, opt_state=o, round=jnp.asarray(start, jnp.int32))
            if private:
                ledger = PrivacyLedger.from_dict(meta["ledger"])
                if ledger.rounds != start:
                    raise checkpoint.CheckpointError(f"{ckpt_dir}: ledger has {ledger.rounds} rounds, checkpoint {start}")
    multiple = capacity_multiple(mesh.size, cfg.client_chunk)  # = client_chunk on one device
    capacity = cohort_capacity(n, dp.sampling_prob, multiple=multiple)

    def cohort_of(r: int):  # a function of (seed, r) alone, so it can be made ahead, on another thread
        indices, mask, _ = sample_cohort_exact(stream_key(seed, Stream.COHORT, r), n, dp.sampling_prob, capacity, multiple=multiple)
        faults = apply_faults(fault_key(seed, r), np.asarray(indices), np.asarray(mask), seed=seed,
                              dropout_prob=cfg.dropout_prob, straggler_deadline=cfg.straggler_deadline)
        return faults, gather_cohort(rows, np.asarray(indices), faults.mask, cfg, seed, r)  # faulted users never train

    with contextlib.closing(prefetched(cohort_of, range(start, cfg.rounds), ahead=prefetch)) as cohorts:
        for r in range(start, cfg.rounds):
            t0 = time.perf_counter()
            faults, cohort = next(cohorts)
            state, m = fl_round.apply(state, cohort, stream_key(seed, Stream.ROUND, r))
            record = {"round": r + 1, **round_metrics_dict(m), "sampled_clients": faults.sampled,
                      "dropped_clients": faults.dropped, "stragglers": faults.stragglers, "seconds": time.perf_counter() - t0}
            if private:
                ledger = ledger.step()
                record["epsilon"] = ledger.epsilon()
            history.append(record)
            if on_round is not None:
                on_round(r + 1, record, state.params, ledger)
            if (r + 1) % cfg.checkpoint_every == 0 or r + 1 == cfg.rounds:
                meta = {"round": r + 1, "seed": seed, "ledger": ledger.to_dict() if private else None}
                checkpoint.save(ckpt_dir, r + 1, (state.params, state.opt_state), meta)
    return state.params, ledger, history
