# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Privacy against utility: choosing ε
#
# DP-FedAvg protects **every user's whole message history**: adding or removing one user changes
# the distribution of the released model by at most (ε, δ). The knob is the *noise multiplier* z:
# each round the server adds Gaussian noise with std z·C to the sum of clipped updates (C = clip
# norm). More noise → smaller ε (stronger privacy) → a less accurate keyboard.
#
# This notebook (1) trains short DP-FedAvg runs at several noise levels and plots ε against top-1
# and keystroke savings, and (2) answers the product question "how much noise does a target ε
# need?" with the accountant alone, without training.

# %% tags=["parameters"]
from keyboard_fl import notebook_utils as nu

PRESET = nu.notebook_preset()  # $KEYBOARD_FL_NOTEBOOK_PRESET: "full" (default) or "tiny" (CI)
NOISE_MULTIPLIERS = [0.3, 0.6, 1.0, 3.0] if PRESET == "full" else [0.3, 1.0, 3.0]  # z of the sweep's runs
nu.quiet_logs()
print(f"notebook preset: {PRESET}; sweep: tiny population, {nu.SWEEP_ROUNDS[PRESET]} rounds per run")

# %%
import matplotlib.pyplot as plt
import numpy as np

from keyboard_fl.privacy import calibrate_noise_multiplier, epsilon_curve

# %% [markdown]
# ## 1 · A noise sweep
#
# Each run below is a small DP-FedAvg run (the `tiny` preset's 300 training users, ~12 a round) at a
# fixed noise multiplier; ε is what dp-accounting's PLD accountant certifies for that run (δ = 1e-5).
# The sweep is small so that it runs in minutes on a laptop; its absolute accuracy is low (a 31k-parameter
# model, a few hundred users), so read it for the ε each noise level buys and for the trend, and
# take the utility of a real budget from the full-size runs below.

# %%
sweep = nu.privacy_sweep(PRESET, NOISE_MULTIPLIERS)
nu.show_table(nu.PRIVACY_HEADERS, nu.privacy_rows(sweep))

# %%
ref = {}
if sweep and sweep[0].get("ngram_top1") is not None:
    ref["trigram (not private)"] = {"top1": sweep[0]["ngram_top1"], "ksr": sweep[0].get("ngram_ksr")}
fig = nu.plot_privacy_utility(sweep, reference=ref)
nu.show(fig)

# %% [markdown]
# For comparison, the full-size runs of notebook 02 (`full`: the README main job, 10,000 users, 64 a
# round, 300 rounds; `tiny`: tiny runs):

# %%
runs = nu.main_runs(PRESET)
nu.show_table(nu.RESULTS_HEADERS, nu.results_rows({m: runs[m] for m in (nu.FEDAVG, nu.DP_FEDAVG)}))

# %% [markdown]
# ## 2 · The noise a target ε needs
#
# ε depends only on the noise multiplier z, the sampling probability q = (users per round) / N, the
# number of rounds and δ — not on the data — so the budget can be set before any training. Below:
# the main job's setting (N = 10,000 users, 64 a round, 300 rounds, δ = 1e-5).

# %%
N, COHORT, ROUNDS, DELTA = 10_000, 64, 300, 1e-5
q = COHORT / N
targets = [1.0, 2.0, 4.0, 8.0, 10.0] if PRESET == "full" else [2.0, 10.0]
rows = []
for eps_target in targets:
    z = calibrate_noise_multiplier(eps_target, q, ROUNDS, DELTA)
    rows.append([eps_target, f"{z:.3f}", f"{z * 0.5 / COHORT:.2e}"])
nu.show_table(["target ε", "noise multiplier z", "noise std on the average (C = 0.5)"], rows)

# %% [markdown]
# How ε grows with the number of rounds at a fixed z (privacy composes: every round a user may be
# sampled spends a little more), and how a larger cohort at the same z buys a much smaller noise on
# the *average* — the reason real deployments train with thousands of users per round.

# %%
round_points = [10, 30, 100, 300, 1000, 3000] if PRESET == "full" else [10, 100, 300]
zs = [0.4375, 0.7, 1.0] if PRESET == "full" else [0.4375, 1.0]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for z in zs:
    axes[0].plot(round_points, epsilon_curve(z, q, round_points, DELTA), marker="o", label=f"z = {z:g}")
axes[0].set_xscale("log")
axes[0].set_yscale("log")
axes[0].set_xlabel("rounds")
axes[0].set_ylabel("ε (δ = 1e-5)")
axes[0].set_title(f"ε over training, {COHORT} of {N:,} users a round")
axes[0].legend()
axes[0].grid(alpha=0.3, which="both")
cohorts = [16, 64, 256, 1000] if PRESET == "full" else [64, 1000]
pop_for = {c: max(N, c * 100) for c in cohorts}  # keep q ≤ 1% as cohorts grow
noise_avg = []
for c in cohorts:
    z = calibrate_noise_multiplier(10.0, c / pop_for[c], ROUNDS, min(DELTA, 1 / (10 * pop_for[c])))
    noise_avg.append(z * 0.5 / c)
axes[1].plot(cohorts, noise_avg, marker="o")
axes[1].set_xscale("log")
axes[1].set_yscale("log")
axes[1].set_xlabel("users per round (population = max(10,000, 100 × cohort))")
axes[1].set_ylabel("noise std on the average update")
axes[1].set_title("ε = 10 over 300 rounds: noise per coordinate")
axes[1].grid(alpha=0.3, which="both")
fig.tight_layout()
nu.show(fig)

# %% [markdown]
# ## What to tell a product team
#
# - **ε is a worst-case bound on what the model reveals about any one user** — all their messages
#   together, not one message. Smaller is stronger: ε ≤ 1 is a strong guarantee; production
#   federated keyboards have reported user-level guarantees of a few units up to about 10 (Gboard's
#   DP language models, Xu et al. 2023). This project's main job uses ε = 10, δ = 1e-5.
# - **The price is paid in noise, and noise is diluted by cohort size.** The noise on the averaged
#   update is z·C / (users per round). With 64 users a round (the main job), ε = 10 already costs
#   several points of top-1 (see notebook 02: DP-FedAvg ends below FedAvg and even below the
#   public-only start); with hundreds to thousands of users a round the same ε costs little. So the
#   first lever is *more users per round*, not a larger ε.
# - **Longer training spends more budget.** ε grows with the rounds (left plot); fix the number of
#   rounds first, then calibrate z for the target ε (table above) — never stop "when it looks good",
#   which would leak through the choice.
# - **Choosing:** pick the smallest ε whose utility the product accepts, measured on held-out users
#   (top-1 and keystroke savings, as in the sweep), and report ε together with δ, the privacy unit
#   (user) and the accountant (PLD, Poisson sampling). What ε does not cover (hyperparameter tuning,
#   the un-noised diagnostics) is listed in the README's privacy section.

# %% [markdown]
# ---
# ## Empirical privacy: ε measured beside the ε we claim (issue 21)
#
# *This section is separate from the rest of the notebook and only reads audited runs.*
#
# The accounted ε is an upper bound. An audit **measures** privacy from the trained model. Canary
# clients (Andrew et al., ICLR 2024) send a fixed random unit direction × C as their update. They
# are Poisson-sampled with the real users' q, then clipped and noised with them. Half of the
# directions are inserted; the rest never are. Each direction's cosine with the model delta gives:
#
# - **ε_est**, from Gaussians fitted to the inserted and never-inserted cosines;
# - **ε_lower**, the one-run lower bound (Steinke, Nasr, Jagielski 2023; jax-privacy's
#   `CanaryScoreAuditor`), which holds at 95% confidence.
#
# For a correct DP implementation, ε_lower ≤ accounted ε. The runs are made by the README's
# "Empirical privacy" commands (`--canary-clients 1000`, then `keyboard-fl audit`).

# %%
import json
from pathlib import Path

audit_root = Path("..") / "runs" / "audit"
rows = []
for name in ("fedavg", "dp-fedavg"):
    path = audit_root / name / "metrics.json"
    emp = json.loads(path.read_text()).get("audit", {}).get("empirical") if path.exists() else None
    if emp is None:
        continue
    for stat in ("final_model", "all_iterates"):
        r = emp[stat]
        rows.append(
            f"{name:10s} {stat:13s} accounted ε {float(emp['accounted_epsilon']):6.2f}  ε_est {r['epsilon_est']:8.2f}  "
            f"ε_lower {r['epsilon_lower']:5.2f} ({r['confidence']:.0%})  TPR@1e-3 {r['tpr_at_fpr']:.3f}  "
            f"AUROC {r['auroc']:.3f}  canaries inserted/sampled {emp['inserted']}/{emp['inserted_sampled']}"
        )
print("\n".join(rows) if rows else "no audited runs under runs/audit/ (see the README's Empirical privacy section)")
