"""Runs keyboard_fl's real jitted DP-FedAvg aggregation on fixed client deltas.

Runs in the *main* venv. Writes an ``.npz`` that ``crosscheck.py`` (TFF venv,
no keyboard_fl import) reads to run TensorFlow Federated's
``DifferentiallyPrivateFactory.gaussian_fixed`` on the very same deltas.

How our real aggregation path is driven with preset deltas, without touching
``keyboard_fl.fl.round``: every client slot's single local step sees a batch
whose ``inputs`` hold the slot's client index, and the loss is
``-<params, D[index]>``. Its gradient is ``-D[index]``, so one SGD step with
learning rate 1 from server params = 0 gives local params ``D[index]`` and the
client delta ``D[index] - 0 = D[index]`` exactly (bit for bit). The server
optimizer is SGD(lr=1) from params 0, so the new server params *are* the
aggregate ``(sum clip(D_i, C) + N(0,(zC)^2)) / (qN)`` computed by
``build_round``: vmap(client_update) -> vmap(clip_update) -> masked sum ->
add_gaussian_noise -> divide by ``expected_cohort``.

Deltas: the parameter pytree of the ``tiny`` preset's CIFG-LSTM (several leaves,
so clipping is by the *global* norm over all leaves); 10 real clients with
norms from 0 (a zero update) to 6C, so some are clipped and some are not;
cohort capacity 24 with 14 padding slots whose table entries are huge (to show
the mask keeps them out); expected cohort qN = 12.5 != 10 realized clients,
so the denominator is observable.

Usage::

    .venv/bin/python tools/tff_crosscheck/export_deltas.py --out /tmp/tff_crosscheck/deltas.npz
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from keyboard_fl.config import preset
from keyboard_fl.fl import AggregatorConfig, CohortBatch, build_round, make_server_optimizer, server_init
from keyboard_fl.models import init_params
from keyboard_fl.privacy.clipping import clip_update

CLIP = 0.5
EXPECTED_COHORT = 12.5
NUM_REAL = 10
CAPACITY = 24
CHUNK = 8  # capacity 24 = 3 chunks; slots 16..23 are all padding (a skipped chunk)
NOISE_MULTIPLIER = 1.0
NOISE_REPEATS = 20
# Target L2 norms of the real clients' deltas, in units of C (0 = zero update).
NORMS_OVER_C = [0.0, 0.2, 0.5, 0.9, 0.999, 1.0, 1.5, 2.0, 3.0, 6.0]


def make_deltas(seed: int) -> tuple[list[str], list[np.ndarray]]:
    """Fixed per-client deltas shaped like the tiny model's params: names, arrays [CAPACITY, ...]."""
    _, params = init_params(preset("tiny").model, jax.random.key(seed))
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    names = [jax.tree_util.keystr(p) for p, _ in flat]
    shapes = [np.shape(x) for _, x in flat]
    rng = np.random.default_rng(seed)
    leaves = [rng.standard_normal((CAPACITY,) + s).astype(np.float32) for s in shapes]
    # Scale each real client's whole (all-leaf) delta to its target norm.
    sq = sum(np.sum(x.reshape(CAPACITY, -1).astype(np.float64) ** 2, axis=1) for x in leaves)
    target = np.full(CAPACITY, 1e3)  # padding slots: huge deltas that must never enter the sum
    target[:NUM_REAL] = np.asarray(NORMS_OVER_C) * CLIP
    scale = (target / np.sqrt(sq)).astype(np.float32)
    leaves = [x * scale.reshape((-1,) + (1,) * (x.ndim - 1)) for x in leaves]
    return names, leaves


_ROUNDS: dict = {}


def run_ours(table, *, noise_multiplier: float, key: int, chunk: int | None):
    """The aggregate from keyboard_fl's jitted build_round with preset client deltas.

    ``table``: pytree of per-slot deltas ``[CAPACITY, ...]`` (the same object on every call).
    """

    def loss_fn(params, batch):
        idx = batch["inputs"][0, 0]
        d = jax.tree.map(lambda t: t[idx], table)
        dot = sum(jnp.vdot(p, q) for p, q in zip(jax.tree.leaves(params), jax.tree.leaves(d)))
        return -dot, jnp.sum(batch["weights"])

    agg = AggregatorConfig(
        mode="dp-fedavg", clip_norm=CLIP, noise_multiplier=noise_multiplier, expected_cohort=EXPECTED_COHORT
    )
    server_opt = make_server_optimizer("sgd", 1.0)
    cache_key = (id(table), noise_multiplier, chunk)
    if cache_key not in _ROUNDS:
        _ROUNDS[cache_key] = build_round(loss_fn, optax.sgd(1.0), server_opt, agg, client_chunk=chunk).apply
    fn = _ROUNDS[cache_key]
    idx = np.arange(CAPACITY, dtype=np.int32).reshape(CAPACITY, 1, 1, 1)
    cohort = CohortBatch(
        jnp.asarray(idx),
        jnp.asarray(idx),
        jnp.ones((CAPACITY, 1, 1, 1), jnp.float32),
        jnp.asarray(np.arange(CAPACITY) < NUM_REAL),
    )
    zeros = jax.tree.map(lambda t: jnp.zeros(t.shape[1:], t.dtype), table)
    state = server_init(zeros, server_opt)
    new_state, metrics = fn(state, cohort, jax.random.key(key))
    return jax.tree.map(np.asarray, new_state.params), metrics


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/tff_crosscheck/deltas.npz"))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    t0 = time.perf_counter()

    names, leaves = make_deltas(a.seed)
    _, params = init_params(preset("tiny").model, jax.random.key(a.seed))
    treedef = jax.tree.structure(params)
    table = jax.tree.unflatten(treedef, [jnp.asarray(x) for x in leaves])
    flat = lambda tree: [np.asarray(x) for x in jax.tree.leaves(tree)]  # noqa: E731

    # Our clipping, client by client (jitted clip_update).
    clip_j = jax.jit(clip_update)
    clipped, norms = [], []
    for i in range(NUM_REAL):
        c, n = clip_j(jax.tree.map(lambda t: t[i], table), CLIP)  # noqa: B023 (used within this iteration)
        clipped.append(flat(c))
        norms.append(float(n))
    clipped_stack = [np.stack([c[j] for c in clipped]) for j in range(len(names))]

    # (a) Noise off: unchunked and chunked round (chunk 3 = all padding, skipped).
    agg0, m0 = run_ours(table, noise_multiplier=0.0, key=0, chunk=None)
    agg0c, _ = run_ours(table, noise_multiplier=0.0, key=0, chunk=CHUNK)
    agg0, agg0c = flat(agg0), flat(agg0c)

    # (b) Noise on: repeat with fresh keys, residual = noised aggregate - clean mean.
    resid = []
    for r in range(NOISE_REPEATS):
        aggz, mz = run_ours(table, noise_multiplier=NOISE_MULTIPLIER, key=1000 + r, chunk=CHUNK)
        resid.append(np.concatenate([(x - y).ravel() for x, y in zip(flat(aggz), agg0)]))
    resid = np.stack(resid)

    out = {f"delta_{j}": x[:NUM_REAL] for j, x in enumerate(leaves)}
    out.update({f"ours_clipped_{j}": x for j, x in enumerate(clipped_stack)})
    out.update({f"ours_agg_nonoise_{j}": x for j, x in enumerate(agg0)})
    out.update({f"ours_agg_nonoise_chunked_{j}": x for j, x in enumerate(agg0c)})
    meta = {
        "leaf_names": names,
        "clip_norm": CLIP,
        "expected_cohort": EXPECTED_COHORT,
        "num_real_clients": NUM_REAL,
        "cohort_capacity": CAPACITY,
        "client_chunk": CHUNK,
        "norms_over_clip_target": NORMS_OVER_C,
        "ours_preclip_norms": norms,
        "ours_round_metrics_nonoise": {k: float(v) for k, v in m0._asdict().items()},
        "noise_multiplier": NOISE_MULTIPLIER,
        "noise_repeats": NOISE_REPEATS,
        "num_coordinates": int(resid.shape[1]),
        "ours_noise": {
            "residual_std": float(resid.std()),
            "residual_mean": float(resid.mean()),
            "expected_std_zC_over_qN": NOISE_MULTIPLIER * CLIP / EXPECTED_COHORT,
            "round_metric_noise_std_average": float(mz.noise_std_average),
        },
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
        },
        "seed": a.seed,
        "export_seconds": None,
    }
    meta["export_seconds"] = round(time.perf_counter() - t0, 2)
    out["meta_json"] = np.array(json.dumps(meta))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(a.out, **out)
    print(json.dumps({k: meta[k] for k in ("ours_preclip_norms", "ours_noise", "export_seconds")}, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
