"""A Flower strategy for user-level DP-FedAvg: Poisson sampling, server noise, our optimizer, our ledger.

Privacy model (exactly what is implemented and accounted)
--------------------------------------------------------
* **Unit**: one Flower SuperNode is one user's device, and a device sends at
  most one update per round (one ``train`` message per sampled node).
* **Sampling**: Poisson, done here, not by Flower. Each round every node the
  SuperLink reports as connected is included independently with probability
  ``q = clients-per-round / num-users``, drawn with an explicit JAX key
  (``keyboard_fl.rng.key(seed, Stream.COHORT, round)``) by :func:`keyboard_fl.fl.sampling.sample_cohort`
  over the node ids in sorted order. Flower's own ``sample_nodes`` (a
  fixed-size ``random.sample`` from Python's global RNG) is *not* used: it is
  neither Poisson nor reproducible, and no Poisson ε would be valid for it.
* **Clipping**: each device clips its whole delta to L2 norm ``C`` before it
  replies (:mod:`keyboard_fl.flower.client_app`). The server clips again with
  the same ``C``, a no-op for an honest device that still bounds a faulty
  one; replies that are errors or non-finite are dropped (same as that user
  not taking part, which cannot raise the sensitivity).
* **Noise and aggregate**: ``(Σ clip(Δ_u, C) + N(0, (zC)² I)) / (q·N)`` with
  one Gaussian draw per round on the server from an explicit key, and the
  *fixed* expected cohort ``q·N = clients-per-round`` as denominator (never the
  number of replies). The result, negated, is the pseudo-gradient of our optax
  server optimizer (:func:`keyboard_fl.fl.round.make_server_optimizer`).
* **Accounting**: one ``PoissonSampled(q, Gaussian(z))`` per round, composed in
  a :class:`keyboard_fl.privacy.PrivacyLedger` (PLD, add/remove-one-user) and
  stepped every round, whoever replied: the noised aggregate is released
  either way. A node that is sampled but does not reply (offline, crashed,
  timed out) is a dropout after Poisson sampling; the ledger keeps ``q``,
  which is conservative.
* **Trust**: the server (and the SuperLink it runs behind) sees each user's
  clipped delta in the clear: this is central DP with a trusted aggregator,
  as in DP-FedAvg (McMahan et al. 2018, arXiv:1710.06963), without secure
  aggregation. The per-client diagnostics in the reply's ``MetricRecord`` are
  not covered by the guarantee (see the ClientApp's docstring).
* **Population**: ``num-users`` (N) only sets the expected cohort and the
  default δ; the Poisson ε itself does not depend on N. If a different
  number of nodes is connected the strategy logs a warning: the denominator
  stays ``clients-per-round`` and the sampling rate stays ``q``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from keyboard_fl import rng
from keyboard_fl.fl.round import ServerState, privatize_mean, server_init, server_update
from keyboard_fl.fl.sampling import sample_cohort
from keyboard_fl.flower.task import arrays_to_params, params_to_arrays
from keyboard_fl.privacy import DpFedAvg as DpFedAvgMechanism
from keyboard_fl.privacy import Participation, PrivacyLedger, clip_update
from keyboard_fl.rng import Stream
from keyboard_fl.typing import PyTree

__all__ = ["DpFedAvg"]


def _server_update(server_opt: optax.GradientTransformation, mechanism: Any):
    """``(state, clipped_sum, key) -> (state, mean_delta_norm)``: the round's own server side
    (:func:`~keyboard_fl.fl.round.privatize_mean`, :func:`~keyboard_fl.fl.round.server_update`), jitted."""

    @jax.jit
    def update(state: ServerState, total: PyTree, key: jax.Array):
        mean_delta, mech_state = privatize_mean(total, mechanism, key, mech_state=state.mech_state)
        new_state = server_update(state, mean_delta, server_opt)._replace(mech_state=mech_state)
        return new_state, optax.tree.norm(mean_delta)

    return update


class _PollingGrid:
    """A Grid whose ``send_and_receive`` polls for replies every ``interval`` s (Flower's HttpGrid: 3 s).

    Everything else is delegated to the wrapped grid. Same semantics as
    ``HttpGrid.send_and_receive``: push, then pull until every reply is in or
    ``timeout`` passes; replies that come too late are left out.
    """

    def __init__(self, grid: Grid, interval: float):
        self._grid, self._interval = grid, interval

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        if not messages:
            return []
        pending = set(self._grid.push_messages(messages))
        end = time.time() + (timeout if timeout is not None else float("inf"))
        out: list[Message] = []
        while pending and time.time() < end:
            got = list(self._grid.pull_messages(pending))
            out.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if pending:
                time.sleep(self._interval)
        return out


class DpFedAvg(Strategy):
    """User-level DP-FedAvg over Flower nodes (see the module docstring for the privacy model).

    Args:
        params: initial global parameters (a pytree; also the wire template).
        server_opt: optax server optimizer over the pseudo-gradient ``-mean_delta``.
        ledger: privacy ledger at round 0; stepped every round. Its mechanism
          (:meth:`PrivacyLedger.for_mechanism`; a classic ledger gives DP-FedAvg
          with ``clip_norm``) is the one source of z, C, q.
        clip_norm: ``C``, the same bound the devices clip to (must equal the mechanism's).
        seed: root of the sampling and noise keys.
        run_dir: if set, ``privacy.json`` (ledger report + per-round history) is
          rewritten there after every round.
        node_wait: seconds to wait for ``ledger.population`` nodes before round 1.
        fraction_evaluate: fraction of nodes asked for a local evaluation (0: none).
        poll_interval: seconds between polls for replies (Flower's default grid waits 3 s).
    """

    def __init__(
        self,
        params: PyTree,
        server_opt: optax.GradientTransformation,
        ledger: PrivacyLedger,
        *,
        clip_norm: float,
        seed: int,
        run_dir: str | Path | None = None,
        node_wait: float = 120.0,
        fraction_evaluate: float = 0.0,
        on_round: Callable[[int, dict], None] | None = None,
        poll_interval: float = 0.2,
    ) -> None:
        self.ledger = ledger
        if ledger.mechanism is None:
            ledger = PrivacyLedger.for_mechanism(
                DpFedAvgMechanism(
                    clip_norm,
                    ledger.noise_multiplier,
                    Participation("poisson", ledger.sampling_prob, ledger.population),
                ),
                ledger.delta,
                ledger.rounds,
                ledger.accountant,
            )
            self.ledger = ledger
        self.mechanism = ledger.mech()
        # Devices clip to a fixed C and sampling here is Poisson: only that mechanism is implemented.
        if type(self.mechanism) is not DpFedAvgMechanism or self.mechanism.participation.scheme != "poisson":
            raise ValueError(
                f"the Flower strategy implements Poisson dp-fedavg with a fixed clip norm, not "
                f"{self.mechanism.to_dict()['name']!r} with {self.mechanism.participation.scheme!r} sampling"
            )
        if float(clip_norm) != self.mechanism.clip_norm:
            raise ValueError(f"clip_norm={clip_norm} differs from the mechanism's C={self.mechanism.clip_norm}")
        self.clip_norm = self.mechanism.clip_norm
        self.expected_cohort = self.mechanism.expected_cohort
        self.template = params
        self.state = server_init(params, server_opt, self.mechanism)
        self._update = _server_update(server_opt, self.mechanism)
        self._clip = jax.jit(clip_update)
        self.seed = seed
        self.sample_key = rng.key(seed, Stream.COHORT)  # folded with the round: rng.key(seed, COHORT, round)
        self.noise_key = rng.key(seed, Stream.NOISE)
        self.run_dir = Path(run_dir) if run_dir else None
        self.node_wait = float(node_wait)
        self.fraction_evaluate = float(fraction_evaluate)
        self.on_round = on_round
        self.poll_interval = float(poll_interval)
        self.history: list[dict] = []
        self.round_offset = 0  # rounds run before this ServerApp (a resumed run, keyboard_fl.flower.resume)
        self._sampled: dict[int, list[int]] = {}
        self._t0: dict[int, float] = {}

    def start(self, grid: Grid, *args, **kwargs):
        """Flower's ``Strategy.start`` over a grid that polls for replies every ``poll_interval`` s."""
        return super().start(_PollingGrid(grid, self.poll_interval), *args, **kwargs)

    # ------------------------------------------------------------------ sampling

    def _connected(self, grid: Grid) -> list[int]:
        """Connected node ids, sorted. Before the first round, waits up to ``node_wait`` s for N of them."""
        deadline = time.monotonic() + (self.node_wait if not self._sampled else 0.0)
        while True:
            nodes = sorted(int(n) for n in grid.get_node_ids())
            if len(nodes) >= self.ledger.population or time.monotonic() > deadline:
                break
            log(INFO, "waiting for nodes: %d of %d connected", len(nodes), self.ledger.population)
            time.sleep(0.5)
        if len(nodes) != self.ledger.population:
            log(
                WARNING,
                "%d nodes connected, num-users is %d: sampling stays q=%.4g, denominator %.4g",
                len(nodes),
                self.ledger.population,
                self.ledger.sampling_prob,
                self.expected_cohort,
            )
        return nodes

    def poisson_sample(self, server_round: int, nodes: list[int]) -> list[int]:
        """Each node independently with probability q; the draw depends only on (seed, round, #nodes)."""
        if not nodes:
            return []
        idx, mask, count = sample_cohort(
            jax.random.fold_in(self.sample_key, server_round), len(nodes), self.ledger.sampling_prob, len(nodes)
        )
        return [nodes[int(i)] for i, m in zip(np.asarray(idx), np.asarray(mask)) if m]

    # ------------------------------------------------------------------ training

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.round_offset  # the run's round: sampling and noise keys as in an uninterrupted run
        nodes = self._connected(grid)
        self._t0[server_round] = time.perf_counter()
        cohort = self.poisson_sample(server_round, nodes)
        self._sampled[server_round] = cohort
        log(
            INFO,
            "configure_train: Poisson-sampled %d of %d nodes (q=%.4g)",
            len(cohort),
            len(nodes),
            self.ledger.sampling_prob,
        )
        config["server-round"] = server_round
        record = RecordDict({"arrays": params_to_arrays(self.state.params), "config": config})
        return [Message(content=record, dst_node_id=n, message_type=MessageType.TRAIN) for n in cohort]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.round_offset
        total = jax.tree.map(np.zeros_like, jax.device_get(self.template))
        included, nonfinite, clipped, losses, reply_norms = 0, 0, 0.0, [], []
        sampled = set(self._sampled.get(server_round, []))
        seen: set[int] = set()
        for reply in replies:
            src = reply.metadata.src_node_id
            if reply.has_error() or src not in sampled or src in seen:  # at most one update per user and round
                continue
            seen.add(src)
            try:
                delta = arrays_to_params(reply.content["arrays"], self.template)
            except (KeyError, ValueError) as e:
                log(WARNING, "round %d: dropping a malformed reply: %s", server_round, e)
                continue
            delta, norm = self._clip(delta, self.clip_norm)  # no-op for an honest device
            if not np.isfinite(float(norm)):
                nonfinite += 1
                continue
            reply_norms.append(float(norm))
            total = jax.tree.map(np.add, total, jax.device_get(delta))
            included += 1
            m = reply.content.get("metrics")
            if m is not None:
                clipped += float(m.get("clipped", 0.0))
                losses.append(float(m.get("train-loss", float("nan"))))
        noise_key = jax.random.fold_in(self.noise_key, server_round)
        self.state, update_norm = self._update(self.state, total, noise_key)
        self.ledger = self.ledger.step()
        privacy = self.ledger.report()
        record = {
            "round": server_round,
            "sampled_clients": len(sampled),
            "included_clients": included,
            "failed_clients": len(sampled) - included - nonfinite,  # errors, malformed or no reply in time
            "nonfinite_clients": nonfinite,
            "clipped_fraction": clipped / max(included, 1),
            "mean_client_loss": float(np.mean(losses)) if losses else float("nan"),
            "reply_norm_max": max(reply_norms, default=0.0),  # norm of a delta as received: <= C when devices clip
            "noise_std": float(self.mechanism.noise_std_of(self.state.mech_state)),
            "noise_std_average": float(self.mechanism.noise_std_of(self.state.mech_state)) / self.expected_cohort,
            "server_update_norm": float(update_norm),
            "epsilon": privacy["epsilon"],
            "delta": privacy["delta"],
            "seconds": time.perf_counter() - self._t0.get(server_round, time.perf_counter()),
        }
        self.history.append(record)
        log(
            INFO,
            "round %d: %d/%d sampled clients included, ε=%.4g (δ=%.0e, %s, %s sampling)",
            server_round,
            included,
            len(sampled),
            privacy["epsilon"],
            privacy["delta"],
            privacy["accountant"],
            privacy["sampling"],
        )
        self._write_privacy()
        if self.on_round is not None:
            self.on_round(server_round, record)
        metrics = MetricRecord({k: float(v) for k, v in record.items() if isinstance(v, (int, float))})
        return params_to_arrays(self.state.params), metrics

    def _write_privacy(self) -> None:
        if self.run_dir is None:
            return
        from keyboard_fl.train.run import write_json

        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(
            self.run_dir / "privacy.json",
            {
                **self.ledger.report(),
                "ledger": self.ledger.to_dict(),
                "clip_norm": self.clip_norm,
                "expected_cohort": self.expected_cohort,
                "history": self.history,
            },
        )

    # ---------------------------------------------------------------- evaluation

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.fraction_evaluate <= 0:
            return []
        server_round += self.round_offset
        nodes = sorted(int(n) for n in grid.get_node_ids())
        gen = rng.generator(self.seed, Stream.FLOWER_EVAL, server_round)
        k = max(1, int(round(self.fraction_evaluate * len(nodes))))
        chosen = sorted(gen.choice(nodes, size=min(k, len(nodes)), replace=False).tolist()) if nodes else []
        config["server-round"] = server_round
        record = RecordDict({"arrays": params_to_arrays(self.state.params), "config": config})
        return [Message(content=record, dst_node_id=int(n), message_type=MessageType.EVALUATE) for n in chosen]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        num, den = 0.0, 0.0
        for r in replies:
            if r.has_error():
                continue
            m = r.content["metrics"]
            n = float(m["num-examples"])
            num += n * float(m["eval-loss"])
            den += n
        return MetricRecord({"eval-loss": num / den, "num-tokens": den}) if den else None

    def summary(self) -> None:
        log(
            INFO,
            "\t├── DP-FedAvg (user level): Poisson q=%.4g, z=%.4g, C=%.4g, denominator qN=%.4g, δ=%.0e",
            self.mechanism.participation.sampling_prob,
            self.mechanism.noise_multiplier,
            self.clip_norm,
            self.expected_cohort,
            self.ledger.delta,
        )
        log(INFO, "\t└── server optimizer over -mean_delta; PLD accountant, add/remove-one-user")

    @property
    def params(self) -> PyTree:
        return self.state.params
