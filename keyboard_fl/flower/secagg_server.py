"""The server side of DP-FedAvg with SecAgg+: Flower's ``SecAggPlusWorkflow`` feeding our strategy only the sum.

Flower 1.42 ships SecAgg+ for its legacy workflow API (``DefaultWorkflow``,
``LegacyContext``, ``configure_fit``/``aggregate_fit``), not for the Message-API
strategies. :class:`SumOnlyStrategy` is the legacy-strategy face of our
:class:`~keyboard_fl.flower.strategy.DpFedAvg`: the same Poisson sampling
(its seeded ``poisson_sample``), the same noise key, optax server optimizer and
:class:`~keyboard_fl.privacy.PrivacyLedger`. One round is:

1. ``configure_fit``: Poisson-sample the cohort (as without SecAgg); the
   workflow then runs the four SecAgg+ stages with the sampled devices (setup,
   key sharing, masked vectors, unmasking; devices answer through
   :func:`keyboard_fl.flower.secagg.device_mod`).
2. The workflow sums the masked integer vectors modulo ``M``, removes the
   masks (those of dropped devices from their Shamir-shared keys) and
   dequantizes: the mean over the ``n`` surviving devices (every device has
   weight 1). That *one* vector is what ``aggregate_fit`` receives, attached
   to every surviving device's result; no individual update is ever decoded.
3. ``aggregate_fit``: sum = ``n``·mean, then exactly the plain round:
   ``(sum + N(0, (zC)²I)) / (q·N)``, server optimizer, ledger step, history,
   ``privacy.json``.

If the protocol halts (fewer than two sampled devices, or too few survivors
for the reconstruction threshold) the round releases the noise alone (the
sum over no device) and the ledger still steps, as a plain round without
replies does. Federated evaluation is not offered under SecAgg.
"""

from __future__ import annotations

import time
from logging import INFO, WARNING

import jax
import numpy as np
from flwr.app import Context, MetricRecord
from flwr.common import FitIns, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import LegacyContext, ServerConfig
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result
from flwr.supercore import log

from keyboard_fl import checkpoint
from keyboard_fl.flower.secagg import SecAggParams
from keyboard_fl.flower.strategy import DpFedAvg, _PollingGrid
from keyboard_fl.flower.task import FlowerSettings, params_to_arrays

__all__ = ["SecAggDpWorkflow", "SumOnlyStrategy", "run_secagg"]


class SecAggDpWorkflow(SecAggPlusWorkflow):
    """``SecAggPlusWorkflow`` that records the devices left after each stage and never skips a release."""

    def __call__(self, grid: Grid, context: Context) -> None:
        if not isinstance(context, LegacyContext):
            raise TypeError(f"Expect a LegacyContext, but get {type(context).__name__}.")
        state = WorkflowState()
        self.active_after: list[int] = []  # devices left after setup, key sharing, masked vectors
        self.sampled = 0
        steps = (self.setup_stage, self.share_keys_stage, self.collect_masked_vectors_stage, self.unmask_stage)
        for step in steps:
            ok = step(grid, context, state)
            self.sampled = len(state.sampled_node_ids)
            self.active_after.append(len(state.active_node_ids))
            if not ok:
                log(WARNING, "secure aggregation halted at %s: the round releases the noise only", step.__name__)
                cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
                context.strategy.release(int(cfg[WorkflowKey.CURRENT_ROUND]), None, 0)
                return


class SumOnlyStrategy(Strategy):
    """A legacy Flower strategy that sees the SecAgg+ sum and nothing else, and releases it as DP-FedAvg does.

    Args:
        dp: our DP-FedAvg strategy (state, sampling, noise key, ledger, history).
        grid: the grid (node ids for sampling, proxies for the workflow).
        secagg: the quantization (C, d, R, M) the devices use.
        train_config: the ``LocalTask`` config sent to the devices.
        evaluate_fn: server-side evaluation ``(round, ArrayRecord) -> MetricRecord`` or None.
        workflow: the SecAgg+ workflow (its per-stage counts go into the history).
    """

    def __init__(self, dp: DpFedAvg, grid: Grid, secagg: SecAggParams, train_config: dict, evaluate_fn, workflow):
        self.dp, self.grid, self.secagg = dp, grid, secagg
        self.train_config, self.evaluate_fn, self.workflow = dict(train_config), evaluate_fn, workflow
        self.leaves, self.treedef = jax.tree.flatten(jax.device_get(dp.template))
        self.evals: dict[int, MetricRecord] = {}
        self.save_rounds = False  # keep every round's released model in run_dir/rounds (FlowerSettings.save_rounds)

    def _parameters(self) -> Parameters:
        return ndarrays_to_parameters([np.asarray(x) for x in jax.tree.leaves(jax.device_get(self.dp.state.params))])

    def initialize_parameters(self, client_manager) -> Parameters:
        return self._parameters()

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager):
        dp = self.dp
        nodes = dp._connected(self.grid)
        dp._t0[server_round] = time.perf_counter()
        cohort = dp.poisson_sample(server_round, nodes)
        dp._sampled[server_round] = cohort
        if len(cohort) > self.secagg.max_cohort:
            raise ValueError(
                f"secagg: {len(cohort)} sampled devices overflow the modular sum (at most {self.secagg.max_cohort} "
                f"for secagg-quantization={self.secagg.quantization_range}, secagg-modulus={self.secagg.modulus_range})"
            )
        log(
            INFO,
            "configure_fit (SecAgg+): Poisson-sampled %d of %d nodes (q=%.4g)",
            len(cohort),
            len(nodes),
            dp.ledger.sampling_prob,
        )
        fitins = FitIns(self._parameters(), {**self.train_config, "server-round": server_round})
        run_id = self.grid.run.run_id
        return [(GridClientProxy(node_id=n, grid=self.grid, run_id=run_id), fitins) for n in cohort]

    def aggregate_fit(self, server_round: int, results, failures):
        n = len(results)
        if n and len({id(res.parameters) for _, res in results}) != 1:
            raise RuntimeError("secagg: results carry different parameters; expected the one unmasked aggregate")
        mean = parameters_to_ndarrays(results[0][1].parameters) if n else None
        self.release(server_round, mean, n)
        return self._parameters(), {}

    def release(self, server_round: int, mean: list[np.ndarray] | None, n: int) -> dict:
        """``(n·mean + N(0,(zC)²)) / (qN)`` → server optimizer; ledger step, history, ``privacy.json``."""
        dp = self.dp
        if mean is None:
            total = [np.zeros(x.shape, x.dtype) for x in self.leaves]
        else:
            if [x.shape for x in mean] != [x.shape for x in self.leaves]:
                raise ValueError("secagg: the unmasked aggregate does not match the model's shapes")
            total = [(np.asarray(m, np.float64) * n).astype(t.dtype) for m, t in zip(mean, self.leaves)]
        noise_key = jax.random.fold_in(dp.noise_key, server_round)
        dp.state, update_norm = dp._update(dp.state, jax.tree.unflatten(self.treedef, total), noise_key)
        dp.ledger = dp.ledger.step()
        privacy = dp.ledger.report()
        sampled = len(dp._sampled.get(server_round, []))
        after = list(getattr(self.workflow, "active_after", []))
        noise_std = float(dp.mechanism.noise_std_of(dp.state.mech_state))
        record = {
            "round": server_round,
            "sampled_clients": sampled,
            "included_clients": n,
            "failed_clients": sampled - n,
            "keys_shared_clients": after[1] if len(after) > 1 else 0,  # devices that completed key sharing
            "dropped_after_key_sharing": (after[1] - after[2]) if len(after) > 2 else 0,  # recovered from shares
            "noise_std": noise_std,
            "noise_std_average": noise_std / dp.expected_cohort,
            "server_update_norm": float(update_norm),
            "secagg_device_clip_norm": self.secagg.device_clip_norm,
            "secagg_step": self.secagg.step,
            "secagg_sum_error_bound": self.secagg.sum_error_bound(n),
            "epsilon": privacy["epsilon"],
            "delta": privacy["delta"],
            "seconds": time.perf_counter() - dp._t0.get(server_round, time.perf_counter()),
        }
        dp.history.append(record)
        log(
            INFO,
            "round %d (SecAgg+): sum of %d/%d sampled clients unmasked, ε=%.4g (δ=%.0e, %s, %s sampling)",
            server_round,
            n,
            sampled,
            privacy["epsilon"],
            privacy["delta"],
            privacy["accountant"],
            privacy["sampling"],
        )
        dp._write_privacy()
        if self.save_rounds and dp.run_dir is not None:  # released models only: each is a DP output
            checkpoint.save(dp.run_dir / "rounds", server_round, jax.device_get(dp.state.params), record, keep=2**31)
        if dp.on_round is not None:
            dp.on_round(server_round, record)
        return record

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters):
        if self.evaluate_fn is None:
            return None
        metrics = self.evaluate_fn(server_round, params_to_arrays(self.dp.state.params))
        self.evals[server_round] = metrics
        return float(metrics["eval-loss"]), dict(metrics)


def run_secagg(grid: Grid, context: Context, dp: DpFedAvg, settings: FlowerSettings, train_config: dict, evaluate_fn):
    """Run ``settings.num_rounds`` SecAgg+ DP-FedAvg rounds; return a Flower ``Result`` as ``DpFedAvg.start`` does."""
    if settings.fraction_evaluate > 0:
        raise ValueError("secagg: fraction-evaluate must be 0 (federated evaluation is not run under SecAgg)")
    dim = sum(int(np.size(x)) for x in jax.tree.leaves(dp.template))
    secagg = SecAggParams(dp.clip_norm, dim, settings.secagg_quantization, settings.secagg_modulus)
    workflow = SecAggDpWorkflow(
        num_shares=float(settings.secagg_shares),
        reconstruction_threshold=float(settings.secagg_threshold),
        max_weight=1.0,  # every device has weight 1: the "weighted mean" is the plain mean
        clipping_range=secagg.clipping_range,
        quantization_range=secagg.quantization_range,
        modulus_range=secagg.modulus_range,
        timeout=settings.secagg_timeout or settings.round_timeout,
    )
    polling = _PollingGrid(grid, dp.poll_interval)
    strategy = SumOnlyStrategy(dp, polling, secagg, train_config, evaluate_fn, workflow)
    strategy.save_rounds = settings.save_rounds
    legacy = LegacyContext(context, config=ServerConfig(num_rounds=settings.num_rounds), strategy=strategy)
    DefaultWorkflow(fit_workflow=workflow, evaluate_workflow=lambda *_: None)(polling, legacy)
    return Result(arrays=params_to_arrays(dp.state.params), evaluate_metrics_serverapp=dict(strategy.evals))
