"""The Flower ServerApp: DP-FedAvg rounds over real SuperNodes, evaluated and accounted.

``main`` reads the run config (:class:`keyboard_fl.flower.task.FlowerSettings`),
initializes the model from the seed exactly as ``keyboard_fl.train.run`` does,
and hands the rounds to :class:`keyboard_fl.flower.strategy.DpFedAvg`
(Poisson sampling, server-side noise, our optax server optimizer, the
privacy ledger). Before the first round and after each round it scores the
global model on a fixed server-side evaluation set (the next-piece loss over
the first ``eval-messages`` messages of the held-out users in ``eval-data``:
users who never train, so this is public-side evaluation, not a query on
private data).

With ``secagg = true`` the rounds run through Flower's SecAgg+ workflow
(:func:`keyboard_fl.flower.secagg_server.run_secagg`): the strategy gets only
the unmasked sum, and adds the same noise to it. ``traffic = true`` counts
the bytes each device moves (``run-dir/traffic.json``).

Files written to ``run-dir`` (when set):

* ``privacy.json``: the ledger's report (ε, δ, z, q, accountant, sampling),
  rewritten after every round, with the per-round history;
* ``result.json``: eval loss before and after every round, the history, ε;
* ``model/``: the final parameters as a verified checkpoint whose metadata
  carries the ledger (ε is stored with the model, DESIGN.md §3).
"""

from __future__ import annotations

import dataclasses
import time
from logging import INFO
from pathlib import Path

import jax
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log

from keyboard_fl import checkpoint
from keyboard_fl.fl.round import make_server_optimizer
from keyboard_fl.flower import resume
from keyboard_fl.flower.secagg_server import run_secagg
from keyboard_fl.flower.strategy import DpFedAvg
from keyboard_fl.flower.task import FlowerSettings, LocalTask, arrays_to_params, load_model, params_to_arrays
from keyboard_fl.flower.traffic import CountingGrid
from keyboard_fl.models import make_loss_fn
from keyboard_fl.privacy import PrivacyLedger, default_delta
from keyboard_fl.train.examples import as_batch, user_rows

__all__ = ["app", "eval_messages", "make_evaluate_fn"]

app = ServerApp()


def eval_messages(path: str, limit: int) -> list[str]:
    """The first ``limit`` test messages of the held-out users of a corpus (fixed order)."""
    from keyboard_fl.data import open_source

    out: list[str] = []
    for u in open_source(path).users("heldout"):
        out.extend(u.test)
        if len(out) >= limit:
            break
    return out[:limit]


def make_evaluate_fn(settings: FlowerSettings, tokenizer, graphdef, template):
    """``evaluate_fn(round, arrays) -> MetricRecord`` with the mean next-piece loss on the eval set."""
    if not settings.eval_data or settings.eval_messages <= 0:
        return None
    msgs = eval_messages(settings.eval_data, settings.eval_messages)
    rows = np.concatenate([user_rows(tokenizer, [m], settings.run_config().seq_len) for m in msgs])
    batch = as_batch(rows)
    loss_fn = jax.jit(make_loss_fn(graphdef))

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        loss, n = loss_fn(arrays_to_params(arrays, template), batch)
        return MetricRecord({"eval-loss": float(loss), "eval-tokens": float(n)})

    return evaluate


def _resumable(strategy: DpFedAvg, settings: FlowerSettings, run_dir: Path | None) -> int:
    """Checkpoints the strategy after every round (``run-dir/state/``); with ``resume``, restores
    the last one first. Returns the rounds already done (:mod:`keyboard_fl.flower.resume`)."""
    if run_dir is None:
        if settings.resume:
            raise ValueError("run config resume = true needs a run-dir (where the round checkpoints are)")
        return 0
    strategy.on_round = lambda r, record: resume.save(strategy, run_dir, r)  # before the new model is evaluated
    start = resume.restore(strategy, run_dir) if settings.resume else 0
    if start:
        log(
            INFO,
            "resumed from %s at round %d (ε so far %.4g)",
            run_dir / resume.STATE_DIR,
            start,
            strategy.ledger.epsilon(),
        )
    if start > settings.num_rounds:
        raise ValueError(
            f"{run_dir / resume.STATE_DIR}: checkpoint at round {start} > num-rounds {settings.num_rounds}"
        )
    return start


@app.main()
def main(grid: Grid, context: Context) -> None:
    t_start = time.perf_counter()
    settings = FlowerSettings.from_run_config(context.run_config)
    tokenizer, model_cfg, graphdef, params = load_model(settings)
    task = LocalTask.from_settings(settings, tokenizer.vocab_size)  # sent to the devices with every message
    delta = settings.delta or default_delta(settings.num_users)
    ledger = PrivacyLedger(settings.noise_multiplier, settings.sampling_prob, delta, settings.num_users)
    run_dir = Path(settings.run_dir) if settings.run_dir else None
    strategy = DpFedAvg(
        params,
        make_server_optimizer(settings.server_optimizer, settings.server_lr),
        ledger,
        clip_norm=settings.clip_norm,
        seed=settings.seed,
        run_dir=run_dir,
        node_wait=settings.node_wait,
        fraction_evaluate=settings.fraction_evaluate,
    )
    start = _resumable(strategy, settings, run_dir)
    evaluate_fn = make_evaluate_fn(settings, tokenizer, graphdef, params)
    if settings.traffic and run_dir is not None:  # opt-in: bytes per device into run-dir/traffic.json
        grid = CountingGrid(grid, run_dir / "traffic.json")
    if settings.secagg:  # SecAgg+: the strategy gets only the unmasked sum (keyboard_fl.flower.secagg_server)
        if start:
            raise ValueError("resume = true is not supported with secagg = true (SecAgg+ rounds restart whole)")
        result = run_secagg(grid, context, strategy, settings, task.to_config(), evaluate_fn)
    else:
        result = strategy.start(
            grid=grid,
            initial_arrays=params_to_arrays(strategy.params),
            num_rounds=settings.num_rounds - start,
            timeout=settings.round_timeout,
            train_config=ConfigRecord(task.to_config()),
            evaluate_config=ConfigRecord(task.to_config()),
            evaluate_fn=evaluate_fn,
        )
    report = strategy.ledger.report()
    log(
        INFO,
        "DP-FedAvg over Flower finished: %d rounds%s, ε=%.4g at δ=%.0e (user level, %s)",
        settings.num_rounds,
        " with SecAgg+" if settings.secagg else "",
        report["epsilon"],
        report["delta"],
        report["accountant"],
    )
    if run_dir is None:
        return
    from keyboard_fl.train.run import write_json

    evals = {int(r) + start: dict(m) for r, m in result.evaluate_metrics_serverapp.items()}
    client_evals = {int(r) + start: dict(m) for r, m in result.evaluate_metrics_clientapp.items()}
    write_json(
        run_dir / "result.json",
        {
            "rounds": settings.num_rounds,
            "eval_loss": {str(r): m["eval-loss"] for r, m in sorted(evals.items())},
            "client_eval": {str(r): m for r, m in sorted(client_evals.items())},
            "history": strategy.history,
            "privacy": report,
            "settings": dataclasses.asdict(settings),
            "model": dataclasses.asdict(model_cfg),
            "seconds": time.perf_counter() - t_start,
            "resumed_from_round": start,
        },
    )
    checkpoint.save(
        run_dir / "model",
        settings.num_rounds,
        jax.device_get(strategy.params),
        {
            "privacy": report,
            "ledger": strategy.ledger.to_dict(),
            "model": dataclasses.asdict(model_cfg),
            "flower": dataclasses.asdict(settings),
        },
        keep=1,
    )
