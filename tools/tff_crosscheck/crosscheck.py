"""Cross-checks keyboard_fl's DP-FedAvg aggregation against TensorFlow Federated.

Runs in the isolated TFF venv (``setup.sh``); it never imports keyboard_fl.
It reads the ``.npz`` written by ``export_deltas.py`` (main venv): fixed client
deltas plus what keyboard_fl's real jitted round made of them, and feeds the
same deltas to ``tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed``
(unweighted; tensorflow_privacy's GaussianSumQuery inside a NormalizedQuery):

* clipping: one client at a time through ``gaussian_fixed(0, 1, C)``, whose
  output is exactly ``clip(delta, C)``, against our ``clip_update``;
* (a) noise off: ``gaussian_fixed(0, qN, C)`` on all real clients against our
  aggregate ``sum clip / qN``; also states which denominator TFF uses
  (``clients_per_round`` = the fixed expected cohort, or the realized count);
* (b) noise on: the std of ``TFF aggregate - clean mean`` over all coordinates
  and repeats, against ``zC/(qN)`` and our own empirical std.

Usage (paths as in README.md)::

    /tmp/tff-venv/bin/python tools/tff_crosscheck/crosscheck.py \\
        --npz /tmp/tff_crosscheck/deltas.npz --out benchmarks/results/tff_crosscheck.json
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_federated as tff  # noqa: E402


def stop_tff_workers() -> None:
    """Ends the ``worker_binary`` subprocesses that TFF's C++ execution context
    started for *this* process (by pid, children only). TFF 0.87 leaves them
    running after the interpreter exits, holding the caller's stdout open."""
    try:
        import psutil
    except ImportError:
        return
    for child in psutil.Process().children(recursive=True):
        if "worker_binary" in " ".join(child.cmdline()):
            child.terminate()


def load(path: Path):
    z = np.load(path)
    meta = json.loads(str(z["meta_json"]))
    n = len(meta["leaf_names"])
    get = lambda prefix: [z[f"{prefix}_{j}"] for j in range(n)]  # noqa: E731
    return meta, get("delta"), get("ours_clipped"), get("ours_agg_nonoise"), get("ours_agg_nonoise_chunked")


def tff_aggregate(leaves_per_client, *, noise_multiplier, clients_per_round, clip, repeats=1):
    """Runs TFF's gaussian_fixed DP aggregator ``repeats`` times (state carried over)."""
    names = [f"leaf{j}" for j in range(len(leaves_per_client[0]))]
    value_type = tff.types.StructWithPythonType(
        [(nm, tff.types.TensorType(np.float32, x.shape)) for nm, x in zip(names, leaves_per_client[0])],
        collections.OrderedDict,
    )
    factory = tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(
        noise_multiplier=noise_multiplier, clients_per_round=clients_per_round, clip=clip
    )
    assert isinstance(factory, tff.aggregators.UnweightedAggregationFactory)
    process = factory.create(value_type)
    state = process.initialize()
    values = [collections.OrderedDict(zip(names, leaves)) for leaves in leaves_per_client]
    outs, measurements = [], None
    for _ in range(repeats):
        out = process.next(state, values)
        state, measurements = out.state, out.measurements
        outs.append([np.asarray(out.result[nm]) for nm in names])
    return outs, measurements


def flat(leaves):
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in leaves])


def np_clip(leaves, c):
    norm = np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in leaves))
    s = min(1.0, c / norm) if norm > 0 else 1.0
    return [np.asarray(x, np.float64) * s for x in leaves], norm


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--npz", type=Path, default=Path("/tmp/tff_crosscheck/deltas.npz"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/tff_crosscheck.json"))
    p.add_argument("--repeats", type=int, default=20, help="noise-on repeats for the TFF std estimate")
    a = p.parse_args(argv)
    t0 = time.perf_counter()

    meta, deltas, ours_clipped, ours_agg, ours_agg_chunked = load(a.npz)
    C, qN, K, z = meta["clip_norm"], meta["expected_cohort"], meta["num_real_clients"], meta["noise_multiplier"]
    clients = [[d[i] for d in deltas] for i in range(K)]

    # float64 numpy reference of the clean aggregate.
    ref_clipped = [np_clip(c, C)[0] for c in clients]
    ref_sum = sum(flat(c) for c in ref_clipped)

    # Clipping, client by client: gaussian_fixed(0, clients_per_round=1, C) returns clip(delta).
    clip_rows = []
    for i, c in enumerate(clients):
        (tff_clip,), _ = tff_aggregate([c], noise_multiplier=0.0, clients_per_round=1.0, clip=C)
        ours = flat([oc[i] for oc in ours_clipped])
        t = flat(tff_clip)
        clip_rows.append(
            {
                "client": i,
                "preclip_norm": float(np_clip(c, C)[1]),
                "clipped": bool(np_clip(c, C)[1] > C),
                "tff_clipped_norm": float(np.linalg.norm(t)),
                "ours_clipped_norm": float(np.linalg.norm(ours)),
                "max_abs_diff_tff_vs_ours": float(np.max(np.abs(t - ours))),
                "max_abs_diff_tff_vs_numpy64": float(np.max(np.abs(t - flat(ref_clipped[i])))),
            }
        )

    # (a) Noise off, all real clients, clients_per_round = qN.
    (tff0,), meas0 = tff_aggregate(clients, noise_multiplier=0.0, clients_per_round=qN, clip=C)
    t0v, o0, o0c = flat(tff0), flat(ours_agg), flat(ours_agg_chunked)
    scale = float(np.max(np.abs(t0v)))
    # Which denominator reproduces TFF's output? Least-squares fit of sum/den.
    fitted_den = float(np.dot(ref_sum, ref_sum) / np.dot(ref_sum, t0v))
    noise_off = {
        "tff_call": f"gaussian_fixed(noise_multiplier=0.0, clients_per_round={qN}, clip={C})",
        "realized_clients": K,
        "max_abs_aggregate": scale,
        "max_abs_diff_tff_vs_ours": float(np.max(np.abs(t0v - o0))),
        "max_abs_diff_tff_vs_ours_chunked_round": float(np.max(np.abs(t0v - o0c))),
        "max_abs_diff_ours_vs_ours_chunked": float(np.max(np.abs(o0 - o0c))),
        "max_abs_diff_tff_vs_numpy64_sum_over_qN": float(np.max(np.abs(t0v - ref_sum / qN))),
        "max_abs_diff_ours_vs_numpy64_sum_over_qN": float(np.max(np.abs(o0 - ref_sum / qN))),
        "max_abs_diff_tff_vs_sum_over_realized_count": float(np.max(np.abs(t0v - ref_sum / K))),
        "tff_denominator_fitted": fitted_den,
        "tff_denominator_is": "clients_per_round (the fixed expected cohort qN), not the realized count"
        if abs(fitted_den - qN) < 1e-3 * qN
        else f"UNEXPECTED: fitted {fitted_den}",
        "tff_measurements": str(meas0),
    }

    # (b) Noise on: residual = TFF noised aggregate - clean aggregate, over repeats.
    tz, measz = tff_aggregate(clients, noise_multiplier=z, clients_per_round=qN, clip=C, repeats=a.repeats)
    resid = np.stack([flat(x) - t0v for x in tz])
    corr01 = float(np.corrcoef(resid[0], resid[1])[0, 1]) if len(resid) > 1 else None
    expected = z * C / qN
    noise_on = {
        "tff_call": f"gaussian_fixed(noise_multiplier={z}, clients_per_round={qN}, clip={C})",
        "expected_std_zC_over_qN": expected,
        "num_coordinates": int(resid.shape[1]),
        "repeats": int(resid.shape[0]),
        "tff_residual_std": float(resid.std()),
        "tff_residual_mean": float(resid.mean()),
        "tff_std_ratio_to_expected": float(resid.std() / expected),
        "tff_corr_between_repeats_0_1": corr01,
        "ours_residual_std": meta["ours_noise"]["residual_std"],
        "ours_residual_mean": meta["ours_noise"]["residual_mean"],
        "ours_std_ratio_to_expected": meta["ours_noise"]["residual_std"] / expected,
        "ours_repeats": meta["noise_repeats"],
        "std_of_std_estimate": expected / np.sqrt(2 * resid.size),
    }

    ok = {
        "clipping_agrees_1e-6": all(r["max_abs_diff_tff_vs_ours"] < 1e-6 for r in clip_rows),
        "noise_off_agrees_1e-6": noise_off["max_abs_diff_tff_vs_ours"] < 1e-6
        and noise_off["max_abs_diff_tff_vs_ours_chunked_round"] < 1e-6,
        "tff_divides_by_clients_per_round": abs(fitted_den - qN) < 1e-3 * qN,
        "tff_noise_std_within_1pct": abs(noise_on["tff_std_ratio_to_expected"] - 1) < 0.01,
        "ours_noise_std_within_1pct": abs(noise_on["ours_std_ratio_to_expected"] - 1) < 0.01,
    }
    import jax
    import jaxlib

    report = {
        "what": "keyboard_fl DP-FedAvg aggregation vs TFF DifferentiallyPrivateFactory.gaussian_fixed on fixed deltas",
        "when_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "all_ok": all(ok.values()),
        "checks": ok,
        "setup": {
            k: meta[k]
            for k in (
                "clip_norm",
                "expected_cohort",
                "num_real_clients",
                "cohort_capacity",
                "client_chunk",
                "noise_multiplier",
                "num_coordinates",
                "leaf_names",
                "seed",
            )
        },
        "clipping": clip_rows,
        "noise_off": noise_off,
        "noise_on": noise_on,
        "ours_round_metrics_nonoise": meta["ours_round_metrics_nonoise"],
        "versions": {
            "tff_venv": {
                "python": platform.python_version(),
                "tensorflow_federated": tff.__version__,
                "tensorflow": tf.__version__,
                "numpy": np.__version__,
                "jax": jax.__version__,
                "jaxlib": jaxlib.__version__,
                "executable": sys.executable,
            },
            "main_venv": meta["versions"],
        },
        "commands": [
            "bash tools/tff_crosscheck/setup.sh   # TFF_VENV=/tmp/tff-venv by default",
            ".venv/bin/python tools/tff_crosscheck/export_deltas.py --out /tmp/tff_crosscheck/deltas.npz",
            "/tmp/tff-venv/bin/python tools/tff_crosscheck/crosscheck.py --npz /tmp/tff_crosscheck/deltas.npz "
            "--out benchmarks/results/tff_crosscheck.json",
        ],
        "seconds": {"export": meta["export_seconds"], "crosscheck": round(time.perf_counter() - t0, 2)},
        "load_average": list(os.getloadavg()),
        "nproc": os.cpu_count(),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2, default=float))
    print(
        json.dumps(
            {
                "checks": ok,
                "noise_off": {k: v for k, v in noise_off.items() if k.startswith("max")},
                "noise_on": noise_on,
            },
            indent=1,
            default=float,
        )
    )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_tff_workers()
