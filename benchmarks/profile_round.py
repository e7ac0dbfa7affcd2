"""Where one DP-FedAvg round's time goes: the round timed part by part.

The default model (``preset("default")``: CIFG-LSTM, V 2048) on the package's
default mesh (:mod:`keyboard_fl.hostdevices`) and ``client_chunk``, one
cohort of ``--cohort`` synthetic clients (``bench_fl_round.synthetic_cohort``).
Each part is its own jitted program over the same cohort, timed like the
round (first call, then the median of ``--rounds`` calls):

* ``host_gather_s``: building the padded cohort on the host (numpy) and
  moving it to the devices (``train_federated`` does this before each round);
* ``forward_s``: every client's loss at the server parameters (no gradient);
* ``train_s``: ``client_update`` for every client (forward + backward + SGD),
  deltas summed unclipped;
* ``train_clip_s``: the same with each delta clipped (the round's client side);
* ``server_s``: noise on the sum + divide + server Adam step alone;
* ``round_s``: the whole jitted round (``build_round(...).apply``).

Then one local step of one client, its parts each jitted alone on one device
(``step_parts``, the median of 30 calls after the first; default model, the task's batch of
16 × 20 pieces unless ``--batch``/``--seq-len`` say otherwise):

* ``grad_step_s``: the loss's gradient, the whole model;
* ``softmax_head_s``: tied output layer + cross-entropy, forward and backward,
  from fixed LSTM outputs;
* ``recurrence_s``: the CIFG recurrence (``models/cifg_scan.py``), forward and
  backward, from fixed input gates;
* ``input_gates_s``: embedding gather + input matmul, forward and backward
  (the scatter-add into the embedding's gradient included).

Usage::

    .venv/bin/python benchmarks/profile_round.py --cohort 256 --max-examples 8

Writes ``benchmarks/results/profile_round.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import keyboard_fl  # noqa: F401  (the fixed host device count, before JAX starts)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_fl_round import NOISE_MULTIPLIER, machine_info, synthetic_cohort  # noqa: E402

from keyboard_fl.config import preset  # noqa: E402
from keyboard_fl.fl import (  # noqa: E402
    AggregatorConfig,
    ClientSlots,
    build_round,
    client_update,
    dp_mean_delta,
    for_each_client,
    make_server_optimizer,
    server_update,
)
from keyboard_fl.fl.sharding import capacity_multiple, client_mesh, shard_cohort  # noqa: E402
from keyboard_fl.models import init_params, make_loss_fn, merge  # noqa: E402
from keyboard_fl.models.cifg_scan import cifg_scan  # noqa: E402
from keyboard_fl.privacy.clipping import clip_update  # noqa: E402


def _timed(fn, rounds: int) -> dict:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return {"first_s": round(first, 3), "median_s": round(statistics.median(times), 6)}


def profile(cohort: int, max_examples: int, rounds: int, chunk: int | None) -> dict:
    cfg = preset("default")
    fed = dataclasses.replace(cfg.federated, max_examples=max_examples)
    chunk = chunk or fed.client_chunk
    mesh = client_mesh(fed.devices)
    capacity = -(-cohort // capacity_multiple(mesh.size, chunk)) * capacity_multiple(mesh.size, chunk)
    graphdef, params = init_params(cfg.model, jax.random.key(0))
    loss_fn = make_loss_fn(graphdef)
    data = dict(
        vocab=cfg.model.vocab_size,
        seq_len=cfg.seq_len,
        batch=fed.batch_size,
        max_examples=max_examples,
        epochs=fed.local_epochs,
    )
    out = {}
    t0 = time.perf_counter()
    batch = shard_cohort(synthetic_cohort(0, capacity, cohort, **data), mesh)
    jax.block_until_ready(batch)
    out["host_gather_s"] = {"median_s": round(time.perf_counter() - t0, 4)}
    slots = ClientSlots(
        batch.inputs,
        batch.targets,
        batch.weights,
        jax.random.split(jax.random.key(1), capacity),
        batch.mask.astype(bool),
    )
    server_opt = make_server_optimizer(fed.server_optimizer, fed.server_lr)
    agg = AggregatorConfig(
        "dp-fedavg", clip_norm=fed.clip_norm, noise_multiplier=NOISE_MULTIPLIER, expected_cohort=float(cohort)
    )
    sgd = fed.client_lr

    def one(s):
        return {"inputs": s.inputs, "targets": s.targets, "weights": s.weights}

    def forward(p, s):
        loss, _ = jax.vmap(loss_fn, in_axes=(None, 0))(p, one(s))
        return {}, s.sampled.astype(jnp.float32), jnp.sum(loss)

    def train(p, s):
        delta, cm = client_update(p, one(s), s.keys, loss_fn=loss_fn, client_opt=sgd)
        return delta, s.sampled.astype(jnp.float32), cm.num_tokens

    def train_clip(p, s):
        delta, cm = client_update(p, one(s), s.keys, loss_fn=loss_fn, client_opt=sgd)
        return clip_update(delta, fed.clip_norm)[0], s.sampled.astype(jnp.float32), cm.num_tokens

    for name, fn in (("forward_s", forward), ("train_s", train), ("train_clip_s", train_clip)):
        run = jax.jit(lambda p, s, fn=fn: for_each_client(fn, p, s, chunk=chunk, mesh=mesh))
        out[name] = _timed(lambda run=run: run(params, slots), rounds)
    fl_round = build_round(loss_fn, sgd, server_opt, agg, client_chunk=chunk, mesh=mesh)
    state = fl_round.init(params)
    server = jax.jit(lambda st, total, key: server_update(st, dp_mean_delta(total, agg, key), server_opt))
    out["server_s"] = _timed(lambda: server(state, params, jax.random.key(2)), rounds)
    out["round_s"] = _timed(lambda: fl_round.apply(fl_round.init(params), batch, jax.random.key(3)), rounds)
    r = out["round_s"]["median_s"]
    share = {k: round(v["median_s"] / r, 3) for k, v in out.items() if k != "round_s"}
    return {
        "cohort": cohort,
        "capacity": capacity,
        "max_examples": max_examples,
        "batch": fed.batch_size,
        "client_chunk": chunk,
        "devices": mesh.size,
        "parts": out,
        "share_of_round": share,
        "client_updates_per_s": round(cohort / r, 1),
    }


def step_parts(batch: int, seq_len: int) -> dict:
    """One client's local step on one device, and its three parts each jitted alone (module docstring)."""
    cfg = preset("default").model
    graphdef, params = init_params(cfg, jax.random.key(0))
    loss_fn = make_loss_fn(graphdef)
    keys = jax.random.split(jax.random.key(4), 4)
    tokens = jax.random.randint(keys[0], (batch, seq_len + 1), 4, cfg.vocab_size)
    b = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": jnp.ones((batch, seq_len))}
    h = 0.1 * jax.random.normal(keys[1], (batch, seq_len, cfg.embed_dim))
    xg = 0.1 * jax.random.normal(keys[2], (seq_len, batch, 3 * cfg.hidden_dim))

    def head(p, h):  # the model's own tied output layer, then the loss's cross-entropy
        logits = merge(graphdef, p).logits(h)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, b["targets"]))

    def recurrence(p, xg):
        cs, hs = cifg_scan(xg, p["w_recurrent"], p["w_projection"])
        return jnp.sum(hs * hs) + jnp.sum(cs)

    def gates(p):  # the model's own embedding gather + input-gate matmul
        return jnp.sum(jnp.square(merge(graphdef, p)._gates_in(b["inputs"])))

    parts = {
        "grad_step_s": (jax.jit(jax.grad(lambda p: loss_fn(p, b)[0])), (params,)),
        "softmax_head_s": (jax.jit(jax.grad(head, argnums=(0, 1))), (params, h)),
        "recurrence_s": (jax.jit(jax.grad(recurrence, argnums=(0, 1))), (params, xg)),
        "input_gates_s": (jax.jit(jax.grad(gates)), (params,)),
    }
    cpu0 = jax.devices()[0]
    out = {}
    for name, (fn, args) in parts.items():
        args = jax.device_put(args, cpu0)
        out[name] = _timed(lambda fn=fn, args=args: fn(*args), 30)["median_s"]
    step = out["grad_step_s"]
    out["share_of_grad_step"] = {k: round(v / step, 3) for k, v in out.items() if k != "grad_step_s"}
    out["batch"], out["seq_len"] = batch, seq_len
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cohort", type=int, default=256)
    p.add_argument("--max-examples", type=int, default=8, help="batch 8: 8 rows = one local step")
    p.add_argument("--chunk", type=int, default=None, help="default: the preset's client_chunk")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=16, help="step_parts: rows per local step")
    p.add_argument("--seq-len", type=int, default=20, help="step_parts: pieces per row")
    p.add_argument("--out", type=Path, default=HERE / "results" / "profile_round.json")
    a = p.parse_args(argv)
    load = list(os.getloadavg())
    row = profile(a.cohort, a.max_examples, a.rounds, a.chunk)
    row["step_parts"] = step_parts(a.batch, a.seq_len)
    row.update(
        when_utc=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        command=" ".join([".venv/bin/python", "benchmarks/profile_round.py"] + sys.argv[1:]),
        load_average_start=load,
        load_average_end=list(os.getloadavg()),
        machine=machine_info(),
    )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps({k: row[k] for k in ("parts", "share_of_round", "client_updates_per_s", "step_parts")}, indent=1))


if __name__ == "__main__":
    main()
