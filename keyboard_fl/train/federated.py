"""The federated training loop: sample, gather, run the jitted round, account, checkpoint.

The round itself (:func:`keyboard_fl.fl.build_round`) is one jitted function;
this host loop only feeds it. Each round's randomness is derived from the
run's seed and the round number through :mod:`keyboard_fl.rng` (streams
``COHORT``, ``ROUND``, ``CLIENT_DATA``, ``FAULTS``), so a run resumed from any
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
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from keyboard_fl import checkpoint
from keyboard_fl.config import FederatedConfig
from keyboard_fl.fl.canary_clients import CanaryPlan, flatten
from keyboard_fl.fl.faults import apply_faults, fault_key
from keyboard_fl.fl.participation import CyclicPoisson, cyclic_capacity, sample_cyclic_cohort_exact, user_bands
from keyboard_fl.fl.round import AggregatorConfig, FederatedRound, ServerState, build_round, make_server_optimizer
from keyboard_fl.fl.sampling import cohort_capacity, sample_cohort_exact
from keyboard_fl.fl.sharding import capacity_multiple, client_mesh
from keyboard_fl.models import Params
from keyboard_fl.privacy import Participation, PrivacyLedger, calibrate_mechanism, default_delta, make_mechanism
from keyboard_fl.rng import Stream
from keyboard_fl.rng import key as stream_key
from keyboard_fl.runs import FEDAVG
from keyboard_fl.train.stream import RowsByUser, gather_cohort, prefetched

__all__ = ["DpSetup", "gather_cohort", "resolve_dp", "round_metrics_dict", "train_federated"]


# Participation schemes whose sampler this loop implements: Poisson (fl/sampling.py) and
# block-cyclic Poisson (fl/participation.py, the sampler amplified BandMF is accounted for).
SAMPLERS: tuple[str, ...] = ("poisson", "cyclic")


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
    def dp_fedavg(
        cls,
        *,
        noise_multiplier: float,
        sampling_prob: float,
        delta: float,
        population: int,
        clip_norm: float,
        **adaptive: Any,
    ) -> DpSetup:
        """Classic DP-FedAvg with Poisson sampling (``adaptive``: ``adaptive_clip_quantile=`` etc.)."""
        p = Participation("poisson", sampling_prob, population)
        mech = make_mechanism(
            "dp-fedavg", clip_norm=clip_norm, noise_multiplier=noise_multiplier, participation=p, **adaptive
        )
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
    if cfg.sampling == "cyclic":
        participation = CyclicPoisson.for_cohort(population, cfg.bands, cfg.clients_per_round)
    else:
        participation = Participation(cfg.sampling, q, population)
    if not private:
        return DpSetup(participation, delta)
    if cfg.noise_multiplier is None and cfg.target_epsilon is None:
        raise ValueError("dp-fedavg needs a noise_multiplier or a target_epsilon")
    try:
        mech = make_mechanism(
            cfg.mechanism,
            clip_norm=cfg.clip_norm,
            participation=participation,
            noise_multiplier=0.0 if cfg.noise_multiplier is None else float(cfg.noise_multiplier),
            adaptive_clip_quantile=cfg.adaptive_clip_quantile,
            adaptive_clip_lr=cfg.adaptive_clip_lr,
            adaptive_clip_count_stddev=cfg.adaptive_clip_count_stddev,
            **({"rounds": cfg.rounds} if cfg.mechanism.startswith("dp-ftrl") else {}),
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
                f"{ckpt_dir}: checkpoint {step} was written by mechanism {saved}, this run uses {ledger.mechanism}"
            )
        return


def make_round(
    loss_fn, cfg: FederatedConfig, dp: DpSetup, *, private: bool, population: int, mesh: Mesh | None = None
) -> FederatedRound:
    """The run's round: its aggregator from ``dp``, its cohort sharded over ``mesh``
    (default ``client_mesh(cfg.devices)``; one device: the unsharded round)."""
    agg = dp.mechanism if private else AggregatorConfig(mode=FEDAVG)
    server_opt = make_server_optimizer(cfg.server_optimizer, cfg.server_lr)
    mesh = mesh if mesh is not None else client_mesh(cfg.devices)
    return build_round(loss_fn, cfg.client_lr, server_opt, agg, client_chunk=cfg.client_chunk, mesh=mesh)


def round_metrics_dict(m) -> dict[str, float]:
    return {k: float(v) for k, v in m._asdict().items()}


def _resume(
    ckpt_dir, state: ServerState, ledger: PrivacyLedger | None
) -> tuple[ServerState, PrivacyLedger | None, int]:
    """The latest good checkpoint's state and ledger, and its round (the inputs unchanged and 0 if none).
    Refuses a checkpoint of another mechanism or whose ledger disagrees with its round."""
    if ledger is not None:
        _check_checkpoint_mechanism(ckpt_dir, ledger)
    found = checkpoint.load_latest(ckpt_dir, (state.params, state.opt_state, state.mech_state))
    if found is None:
        return state, ledger, 0
    start, (p, o, ms), meta = found
    state = state._replace(params=p, opt_state=o, round=jnp.asarray(start, jnp.int32), mech_state=ms)
    if ledger is not None:
        saved = PrivacyLedger.from_dict(meta["ledger"])
        if saved.rounds != start:
            raise checkpoint.CheckpointError(f"{ckpt_dir}: ledger has {saved.rounds} rounds, checkpoint {start}")
        if saved.mechanism is not None and saved.mechanism != ledger.mechanism:
            raise checkpoint.CheckpointError(
                f"{ckpt_dir}: checkpoint was written by mechanism {saved.mechanism}, this run uses {ledger.mechanism}"
            )
        ledger = saved
    return state, ledger, start


def _cohort_sampler(
    rows: RowsByUser, cfg: FederatedConfig, dp: DpSetup, seed: int, devices: int
) -> Callable[[int], tuple[Any, Any]]:
    """``cohort_of(r) -> (faults, cohort)``: round ``r``'s sampled users (Poisson, or cyclic bands),
    their faults, and their gathered rows, padded to a capacity that is a multiple of
    ``devices × client_chunk``."""
    n = len(rows)
    multiple = capacity_multiple(devices, cfg.client_chunk)  # = client_chunk on one device
    cyclic = isinstance(dp.participation, CyclicPoisson)
    if cyclic:  # round r samples band r mod b; the bands are one draw of the seed
        bands = user_bands(stream_key(seed, Stream.BANDS), n, dp.participation.num_bands)
        capacity = cyclic_capacity(dp.participation, multiple=multiple)
    else:
        capacity = cohort_capacity(n, dp.sampling_prob, multiple=multiple)

    def cohort_of(r: int):  # a function of (seed, r) alone, so it can be made ahead, on another thread
        k = stream_key(seed, Stream.COHORT, r)
        if cyclic:
            indices, mask, _ = sample_cyclic_cohort_exact(k, bands, r, dp.participation, capacity, multiple=multiple)
        else:
            indices, mask, _ = sample_cohort_exact(k, n, dp.sampling_prob, capacity, multiple=multiple)
        faults = apply_faults(
            fault_key(seed, r),
            np.asarray(indices),
            np.asarray(mask),
            seed=seed,
            dropout_prob=cfg.dropout_prob,
            straggler_deadline=cfg.straggler_deadline,
        )
        return faults, gather_cohort(rows, np.asarray(indices), faults.mask, cfg, seed, r)  # faulted users never train

    return cohort_of


def _save_iterate(directory: Path, r: int, params: Params) -> None:
    """The released parameters after round ``r``, flattened (``fl.canary_clients.flatten``), saved atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".iterate-{r:06d}.npy"
    np.save(tmp, flatten(params))
    tmp.replace(directory / f"iterate-{r:06d}.npy")


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
    canaries: CanaryPlan | None = None,
    iterates_dir: Path | None = None,
) -> tuple[Params, PrivacyLedger, list[dict]]:
    """Run rounds up to ``cfg.rounds``; checkpoint every ``cfg.checkpoint_every``; return params, ledger, history.

    ``rows`` gives a user's rows by index (streamed or eager: same result);
    with ``prefetch`` the next round's cohort is made while this one trains.
    The history holds the rounds run by this call (a resumed run: those after
    its checkpoint); the run's full log is ``on_round``'s to keep.
    ``fl_round``: a prebuilt :func:`make_round` for this configuration (tests
    reuse one compiled round across runs); None builds it.
    ``canaries``: canary clients added to every round (:mod:`keyboard_fl.fl.canary_clients`);
    the real users' cohorts, updates and noise are those of the run without them.
    ``iterates_dir``: the released parameters after every round are saved there
    (flattened, ``iterate-NNNNNN.npy``, 0 = the start) for the empirical-privacy audit.
    """
    n = len(rows)
    if dp.population != n:
        raise ValueError(f"the privacy setup is for N={dp.population} users, the data has {n}")
    if private and dp.mechanism is None:
        raise ValueError("a private run needs a mechanism (resolve_dp)")
    mesh = client_mesh(cfg.devices)
    fl_round = fl_round or make_round(loss_fn, cfg, dp, private=private, population=n, mesh=mesh)
    state = fl_round.init(params)
    ledger = dp.ledger() if private else None
    history: list[dict] = []
    start = 0
    if resume:
        state, ledger, start = _resume(ckpt_dir, state, ledger)
    cohort_of = _cohort_sampler(rows, cfg, dp, seed, mesh.size)
    if canaries is not None and isinstance(dp.participation, CyclicPoisson):
        raise ValueError("canary clients are Poisson-sampled: use federated.sampling='poisson' with canary_clients")
    if iterates_dir is not None:
        _save_iterate(iterates_dir, start, state.params)
    with contextlib.closing(prefetched(cohort_of, range(start, cfg.rounds), ahead=prefetch)) as cohorts:
        for r in range(start, cfg.rounds):
            t0 = time.perf_counter()
            faults, cohort = next(cohorts)
            if canaries is not None:
                cohort = cohort._replace(canaries=canaries.slots(r))
            state, m = fl_round.apply(state, cohort, stream_key(seed, Stream.ROUND, r))
            record = {
                "round": r + 1,
                **round_metrics_dict(m),
                "sampled_clients": faults.sampled,
                "dropped_clients": faults.dropped,
                "stragglers": faults.stragglers,
                "seconds": time.perf_counter() - t0,
            }
            if canaries is not None:
                record["canary_clients"] = int(np.sum(np.asarray(cohort.canaries.mask)))
            if iterates_dir is not None:
                _save_iterate(iterates_dir, r + 1, state.params)
            if private:
                ledger = ledger.step()
                record["epsilon"] = ledger.epsilon()
            history.append(record)
            if on_round is not None:
                on_round(r + 1, record, state.params, ledger)
            if (r + 1) % cfg.checkpoint_every == 0 or r + 1 == cfg.rounds:
                meta = {"round": r + 1, "seed": seed, "ledger": ledger.to_dict() if private else None}
                checkpoint.save(ckpt_dir, r + 1, (state.params, state.opt_state, state.mech_state), meta)
    return state.params, ledger, history
