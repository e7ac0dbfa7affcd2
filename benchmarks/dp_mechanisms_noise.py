"""Noise each DP mechanism puts on the average model update at the same ε.

At the candidate main-job setting (N users, expected cohort B, T rounds,
δ, target ε) it calibrates the noise multiplier z of

* DP-FedAvg with Poisson sampling (q = B/N; PLD over T sampled Gaussians),
* amplified BandMF DP-FTRL (block-cyclic Poisson with b bands, q_b = bB/N;
  jax-privacy's ``amplified_bandmf_event``; every divisor b of T is tried and
  the best kept, b = 1 being DP-FedAvg itself),
* BLT DP-FTRL (deterministic cyclic participation, b = N/B bands, so each user
  joins ceil(T/b) times; one Gaussian mechanism with the BLT's min-sep
  sensitivity),

and reports, per unit clip norm, the std of the noise on the *average* update:
``per_round`` (the noise added to one round's average: σ‖C⁻¹_t‖/B, RMS over
rounds) and ``effective`` (the iid per-round std that would give the same mean
squared noise in the model after t rounds of SGD with lr 1, averaged over t:
the figure that decides utility; for DP-FedAvg it equals z/B).

    PYTHONPATH=. python benchmarks/dp_mechanisms_noise.py
        → benchmarks/results/mechanism_noise.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import dp_accounting
import numpy as np
from jax_privacy.experimental import accounting as jp_accounting

from keyboard_fl.fl.participation import CyclicPoisson
from keyboard_fl.privacy import correlated_noise as cn
from keyboard_fl.privacy.dp_ftrl import (
    BLT,
    PLD_DISCRETIZATION,
    BandMF,
    calibrate_noise_multiplier,
)

OUT = Path(__file__).parent / "results" / "mechanism_noise.json"


def _pld():
    return dp_accounting.pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)


def dp_fedavg(n: int, cohort: int, rounds: int, eps: float, delta: float) -> dict:
    q = cohort / n
    # BandMF with one band and coefficient 1 is exactly DP-FedAvg (Poisson q, T rounds, σ = z).
    one_band = BandMF(1.0, 1.0, CyclicPoisson(n, 1, q), rounds, (1.0,))
    z = calibrate_noise_multiplier(one_band, eps, delta).noise_multiplier
    achieved = _pld().compose(jp_accounting.dpsgd_event(z, rounds, sampling_prob=q)).get_epsilon(delta)
    return {
        "z": z,
        "sampling_prob": q,
        "epsilon": achieved,
        "noise_std_sum": z,
        "per_round_std_avg": z / cohort,
        "effective_std_avg": z / cohort,
    }


def _noise_figures(mech, kind: str, params: dict, rounds: int, cohort: float) -> dict:
    prof = cn.noise_error_profile(kind, params, rounds)
    sigma = mech.noise_std  # clip 1
    return {
        "noise_std_sum": sigma,
        "per_round_std_avg": sigma * math.sqrt(float(np.mean(prof["round"]))) / cohort,
        "effective_std_avg": sigma * cn.effective_iid_std(prof["prefix"]) / cohort,
    }


def bandmf(n: int, cohort: int, rounds: int, eps: float, delta: float, coef_cache: dict, max_bands: int) -> dict:
    per_b = []
    for b in [d for d in range(1, min(rounds, max_bands) + 1) if rounds % d == 0 and d * cohort <= n]:
        if (rounds, b) not in coef_cache:
            coef_cache[(rounds, b)] = cn.optimize_bandmf_coefs(rounds, b)
        p = CyclicPoisson.for_cohort(n, b, cohort)
        mech = calibrate_noise_multiplier(BandMF(1.0, 1.0, p, rounds, coef_cache[(rounds, b)]), eps, delta)
        row = {
            "bands": b,
            "z": mech.noise_multiplier,
            "sampling_prob_in_band": p.sampling_prob,
            "epsilon": mech.epsilon(delta),
        }
        row.update(_noise_figures(mech, "bandmf", {"coefs": mech.coefs}, rounds, p.expected_cohort))
        per_b.append(row)
        print(f"  bandmf b={b}: z={row['z']:.4f} eff={row['effective_std_avg']:.3e}", flush=True)
    best = min(per_b, key=lambda r: r["effective_std_avg"])
    return {**best, "coefs": list(coef_cache[(rounds, best["bands"])]), "per_bands": per_b}


def blt(n: int, cohort: int, rounds: int, eps: float, delta: float, blt_cache: dict) -> dict:
    b = n // cohort
    p = CyclicPoisson(n, b, 1.0)
    key = (rounds, p.min_separation if p.max_participations(rounds) > 1 else 0, p.max_participations(rounds))
    if key not in blt_cache:
        blt_cache[key] = cn.optimize_blt(rounds, p.min_separation, p.max_participations(rounds))
    decay, scale = blt_cache[key]
    mech = calibrate_noise_multiplier(BLT(1.0, 1.0, p, rounds, decay, scale), eps, delta)
    out = {
        "bands": b,
        "max_participations": p.max_participations(rounds),
        "z": mech.noise_multiplier,
        "sensitivity": mech.sensitivity,
        "epsilon": mech.epsilon(delta),
        "buf_decay": list(decay),
        "output_scale": list(scale),
    }
    out.update(_noise_figures(mech, "blt", {"buf_decay": decay, "output_scale": scale}, rounds, p.expected_cohort))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--cohorts", type=int, nargs="+", default=[1000, 2000])
    ap.add_argument("--rounds", type=int, nargs="+", default=[50, 100, 200])
    ap.add_argument("--epsilon", type=float, default=2.0)
    ap.add_argument("--delta", type=float, default=1e-7)
    ap.add_argument("--max-bands", type=int, default=50, help="largest b tried for BandMF (divisors of T)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    rows, coef_cache, blt_cache = [], {}, {}
    t0 = time.time()
    for rounds in a.rounds:
        for cohort in a.cohorts:
            print(f"N={a.users} B={cohort} T={rounds}", flush=True)
            fedavg = dp_fedavg(a.users, cohort, rounds, a.epsilon, a.delta)
            band = bandmf(a.users, cohort, rounds, a.epsilon, a.delta, coef_cache, a.max_bands)
            bl = blt(a.users, cohort, rounds, a.epsilon, a.delta, blt_cache)
            ref = fedavg["effective_std_avg"]
            row = {
                "users": a.users,
                "expected_cohort": cohort,
                "rounds": rounds,
                "dp-fedavg": fedavg,
                "dp-ftrl-bandmf": band,
                "dp-ftrl-blt": bl,
                "effective_std_ratio_to_dp_fedavg": {
                    "dp-ftrl-bandmf": band["effective_std_avg"] / ref,
                    "dp-ftrl-blt": bl["effective_std_avg"] / ref,
                },
            }
            print(json.dumps(row["effective_std_ratio_to_dp_fedavg"]), flush=True)
            rows.append(row)
            _write(a, rows, time.time() - t0)  # after every setting: a partial run keeps what it measured
    print(f"wrote {a.out}")


def _write(a: argparse.Namespace, rows: list, seconds: float) -> None:
    result = {
        "epsilon": a.epsilon,
        "delta": a.delta,
        "clip_norm": 1.0,
        "accountant": "PLD",
        "pld_discretization": PLD_DISCRETIZATION,
        "jax_privacy": "2.0.0",
        "max_bands": a.max_bands,
        "command": "PYTHONPATH=. python benchmarks/dp_mechanisms_noise.py",
        "seconds": round(seconds, 1),
        "settings": rows,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")


if __name__ == "__main__":
    main()
