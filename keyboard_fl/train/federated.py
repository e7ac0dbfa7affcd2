"""The federated training loop: sample, gather, run the jitted round, account, checkpoint.

The round itself (:func:`keyboard_fl.fl.build_round`) is one jitted function;
this host loop only feeds it. Each round's randomness is derived from the
run's seed and the round number (``fold_in``), so a run resumed from any
checkpoint replays exactly the rounds an uninterrupted run would have.

Privacy bookkeeping (DESIGN.md §3): the run's privacy
:class:`~keyboard_fl.privacy.Mechanism` (``cfg.mechanism``, optionally
wrapped in adaptive clipping) is the one source of z, C and q; users are
sampled as its participation says (Poisson here: a config whose sampling no
sampler implements is refused); the ledger composes the mechanism's event
one round at a time and is stored, with the mechanism's state, in every
checkpoint. Only clipped, noised aggregates reach the
server state; the host loop never looks at a user's text, only at the rows
the client function trains on.

Client faults (:mod:`keyboard_fl.fl.faults`, ``cfg.dropout_prob`` and
``cfg.straggler_deadline``) are drawn after sampling from a key derived from
the round key, so they are as deterministic and resume-safe as the rest;
the faulted users are masked out of the cohort and counted per round
(``dropped_clients``, ``stragglers``; ``sampled_clients`` is the Poisson
draw, ``cohort_size`` the users that reported). The ledger keeps q.

The cohort axis is sharded over ``cfg.devices`` devices (None: all visible;
:mod:`keyboard_fl.fl.sharding`), the capacity padded to a multiple of
devices × ``client_chunk``. On one device nothing changes; on several the
result equals the one-device run up to float summation order.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from keyboard_fl import checkpoint
from keyboard_fl.config import FederatedConfig
from keyboard_fl.fl.faults import apply_faults, fault_key
from keyboard_fl.fl.round import AggregatorConfig, CohortBatch, ServerState, build_round, make_server_optimizer, server_init
from keyboard_fl.fl.sampling import cohort_capacity, sample_cohort_exact
from keyboard_fl.fl.sharding import capacity_multiple, client_mesh
from keyboard_fl.models import Params
from keyboard_fl.privacy import Participation, PrivacyLedger, calibrate_mechanism, default_delta, make_mechanism
from keyboard_fl.train.examples import UserRows, as_batch, client_steps


# Participation schemes whose sampler this loop implements (fl/sampling.py: Poisson).
SAMPLERS: tuple[str, ...] = ("poisson",)


@dataclasses.dataclass(frozen=True)
class DpSetup:
    """The resolved privacy of a run: how users are sampled, δ, and the mechanism (None: not private).

    z, C and q are read from the mechanism, never stored twice.
    """

    # How users join rounds (q, N); the sampler follows it with or without DP.
    participation: Participation
    # δ of the reported (ε, δ).
    delta: float
    # The privacy mechanism (None for FedAvg / central).
    mechanism: Any = None
    # The accountant that reports ε (None: the mechanism's own).
    accountant: str | None = None

    def __post_init__(self):
        if self.mechanism is not None and self.mechanism.participation != self.participation:
            raise ValueError(f"mechanism participation {self.mechanism.participation} != run's {self.participation}")

    @classmethod
    def dp_fedavg(cls, *, noise_multiplier: float, sampling_prob: float, delta: float, population: int,
                  clip_norm: float, **adaptive: Any) -> DpSetup:
        """Classic DP-FedAvg with Poisson sampling (``adaptive``: ``adaptive_clip_quantile=`` etc.)."""
        p = Participation("poisson", sampling_prob, population)
        mech = make_mechanism("dp-fedavg", clip_norm=clip_norm, noise_multiplier=noise_multiplier, participation=p,
                              **adaptive)
        return cls(p, delta, mech)

    sampling_prob = property(lambda self: self.participation.sampling_prob)
    population = property(lambda self: self.participation.population)
    noise_multiplier = property(lambda self: self.mechanism.noise_multiplier if self.mechanism else 0.0)
    clip_norm = property(lambda self: self.mechanism.clip_norm if self.mechanism else float("inf"))

    def ledger(self) -> PrivacyLedger | None:
        if self.mechanism is None:
            return None
        return PrivacyLedger.for_mechanism(self.mechanism, self.delta, accountant=self.accountant)


def resolve_dp(cfg: FederatedConfig, population: int, private: bool) -> DpSetup:
    """q from the expected cohort, δ default below 1/N, the mechanism with z given or calibrated to the target ε.

    Refuses, naming the field, a sampling no sampler here implements or that
    the mechanism's accountant cannot account.
    """
    q = cfg.sampling_prob(population)
    delta = cfg.delta if cfg.delta is not None else default_delta(population)
    if cfg.sampling not in SAMPLERS:
        raise ValueError(
            f"federated.sampling={cfg.sampling!r}: the training loop's sampler draws {'/'.join(SAMPLERS)} cohorts "
            "(fl/sampling.py); an accountant must never assume a participation the sampler does not implement"
        )
    participation = Participation(cfg.sampling, q, population)
    if not private:
        return DpSetup(participation, delta)
    if cfg.noise_multiplier is None and cfg.target_epsilon is None:
        raise ValueError("dp-fedavg needs a noise_multiplier or a target_epsilon")
    try:
        mech = make_mechanism(
            cfg.mechanism, clip_norm=cfg.clip_norm, participation=participation,
            noise_multiplier=0.0 if cfg.noise_multiplier is None else float(cfg.noise_multiplier),
            adaptive_clip_quantile=cfg.adaptive_clip_quantile, adaptive_clip_lr=cfg.adaptive_clip_lr,
            adaptive_clip_count_stddev=cfg.adaptive_clip_count_stddev,
        )
        if cfg.noise_multiplier is None:
            mech = calibrate_mechanism(mech, cfg.target_epsilon, cfg.rounds, delta, accountant=cfg.accountant)
    except ValueError as e:
        raise ValueError(f"federated (mechanism={cfg.mechanism!r}, sampling={cfg.sampling!r}): {e}") from None
    return DpSetup(participation, delta, mech, cfg.accountant)


def _check_checkpoint_mechanism(ckpt_dir, ledger: PrivacyLedger) -> None:
    """Refuses to resume from checkpoints written by another mechanism (their state would not even load)."""
    for step in reversed(checkpoint.list_steps(ckpt_dir)):
        try:
            meta = json.loads((Path(ckpt_dir) / f"ckpt-{step:06d}.json").read_text())["meta"]
        except (OSError, ValueError, KeyError):
            continue  # damaged: load_latest skips it with a warning
        saved = (meta.get("ledger") or {}).get("mechanism")
        if saved is not None and saved != ledger.mechanism:
            raise checkpoint.CheckpointError(
                f"{ckpt_dir}: checkpoint {step} was written by mechanism {saved}, this run uses {ledger.mechanism}")
        return


def gather_cohort(rows: UserRows, indices: np.ndarray, mask: np.ndarray, cfg: FederatedConfig, seed: int, round_: int) -> CohortBatch:
    """Padded local steps [K, S, B, T] of the sampled users (zeros for padding slots)."""
    width = rows.rows.shape[-1]
    steps = cfg.local_epochs * -(-cfg.max_examples // cfg.batch_size)
    out = np.zeros((len(indices), steps, cfg.batch_size, width), np.int32)
    for slot, (u, m) in enumerate(zip(indices, mask)):
        if m:
            rng = np.random.default_rng(np.random.SeedSequence([seed, 0xF1, round_, int(u)]))
            out[slot] = client_steps(rows.user(int(u)), batch_size=cfg.batch_size, max_examples=cfg.max_examples, epochs=cfg.local_epochs, rng=rng)
    b = as_batch(out)
    return CohortBatch(jnp.asarray(b["inputs"]), jnp.asarray(b["targets"]), jnp.asarray(b["weights"]), jnp.asarray(mask))


def round_metrics_dict(m) -> dict[str, float]:
    return {k: float(v) for k, v in m._asdict().items()}


def train_federated(
    loss_fn,
    params: Params,
    rows: UserRows,
    cfg: FederatedConfig,
    dp: DpSetup,
    *,
    private: bool,
    seed: int,
    ckpt_dir,
    resume: bool,
    on_round: Callable[[int, dict, Params, PrivacyLedger], None] | None = None,
) -> tuple[Params, PrivacyLedger, list[dict]]:
    """Run ``cfg.rounds`` rounds; checkpoint every ``cfg.checkpoint_every``; return params, ledger, history."""
    n = len(rows)
    server_opt = make_server_optimizer(cfg.server_optimizer, cfg.server_lr)
    if dp.population != n:
        raise ValueError(f"the privacy setup is for N={dp.population} users, the data has {n}")
    if private and dp.mechanism is None:
        raise ValueError("a private run needs a mechanism (resolve_dp)")
    agg = dp.mechanism if private else AggregatorConfig(mode="fedavg")
    # The cohort axis over the devices (one device: the unsharded round). The
    # sharded round puts state, cohort and key on the mesh itself.
    mesh = client_mesh(cfg.devices)
    round_fn = build_round(loss_fn, cfg.client_lr, server_opt, agg, client_chunk=cfg.client_chunk, mesh=mesh)
    state = server_init(params, server_opt, agg)
    ledger = dp.ledger() if private else None
    history: list[dict] = []
    start = 0
    if resume and private:
        _check_checkpoint_mechanism(ckpt_dir, ledger)
    if resume:
        found = checkpoint.load_latest(ckpt_dir, (state.params, state.opt_state, state.mech_state))
        if found is not None:
            start, (p, o, ms), meta = found
            state = ServerState(p, o, jnp.asarray(start, jnp.int32), ms)
            history = meta.get("history", [])
            if private:
                saved = PrivacyLedger.from_dict(meta["ledger"])
                if saved.rounds != start:
                    raise checkpoint.CheckpointError(f"{ckpt_dir}: ledger has {saved.rounds} rounds, checkpoint {start}")
                if saved.mechanism is not None and saved.mechanism != ledger.mechanism:
                    raise checkpoint.CheckpointError(
                        f"{ckpt_dir}: checkpoint was written by mechanism {saved.mechanism}, this run uses {ledger.mechanism}")
                ledger = saved
    root = jax.random.key(seed)
    fl_key = jax.random.fold_in(root, 0xFED)
    multiple = capacity_multiple(mesh.size, cfg.client_chunk)  # = client_chunk on one device
    capacity = cohort_capacity(n, dp.sampling_prob, multiple=multiple)
    for r in range(start, cfg.rounds):
        k_sample, k_round = jax.random.split(jax.random.fold_in(fl_key, r))
        indices, mask, count = sample_cohort_exact(k_sample, n, dp.sampling_prob, capacity, multiple=multiple)
        indices, mask = np.asarray(indices), np.asarray(mask)
        t0 = time.perf_counter()
        faults = apply_faults(fault_key(jax.random.fold_in(fl_key, r)), indices, mask, seed=seed,
                              dropout_prob=cfg.dropout_prob, straggler_deadline=cfg.straggler_deadline)
        cohort = gather_cohort(rows, indices, faults.mask, cfg, seed, r)  # faulted users never train
        state, m = round_fn(state, cohort, k_round)
        record = {"round": r + 1, **round_metrics_dict(m), "sampled_clients": faults.sampled,
                  "dropped_clients": faults.dropped, "stragglers": faults.stragglers, "seconds": time.perf_counter() - t0}
        if private:
            ledger = ledger.step()
            record["epsilon"] = ledger.epsilon()
        history.append(record)
        if on_round is not None:
            on_round(r + 1, record, state.params, ledger)
        if (r + 1) % cfg.checkpoint_every == 0 or r + 1 == cfg.rounds:
            meta = {"round": r + 1, "seed": seed, "history": history, "ledger": ledger.to_dict() if private else None}
            checkpoint.save(ckpt_dir, r + 1, (state.params, state.opt_state, state.mech_state), meta)
    return state.params, ledger, history
