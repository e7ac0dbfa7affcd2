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
# Every private mechanism here protects **each user's whole message history**: adding or removing
# one user changes the distribution of the released model by at most (ε, δ). The price is noise on
# the model update, and this notebook is the page a product team picks its budget from:
#
# 1. the **privacy–utility table** of full-size runs — the README main job (1,000,000 users, about
#    1,000 a round, 40 rounds, public pretraining) retrained at ε ∈ {0.5, 1, 2, 4, 8} for each
#    mechanism, with the public-only start and non-private FedAvg as references;
# 2. their **learning curves** at the main job's ε = 2;
# 3. the **noise each target ε needs** from each mechanism, from the accountant alone.
#
# The mechanisms (README § Privacy):
#
# - **DP-FedAvg** (McMahan et al. 2018): Poisson sampling, clipping, independent Gaussian noise every
#   round; PLD accounting with amplification by sampling.
# - **DP-FTRL with banded matrix factorisation** (amplified BandMF, Choquette-Choo et al. 2023,
#   arXiv 2306.08153; the Gboard recipe of Xu et al. 2023): users split into 10 bands, round t
#   Poisson-samples band t mod 10, and the noise is correlated across rounds so that much of it
#   cancels in the model's running sum; jax-privacy's matrix and accounting.
#
# The sweep is a long benchmark (about 10 minutes a run on a quiet 2-core machine), so this
# notebook reads its results from `benchmarks/results/privacy_utility.json`; re-run or extend it
# with `.venv/bin/python benchmarks/privacy_utility.py` (resumable, one run directory per cell).

# %% tags=["parameters"]
from keyboard_fl import notebook_utils as nu

PRESET = nu.notebook_preset()  # $KEYBOARD_FL_NOTEBOOK_PRESET: "full" (default) or "tiny" (CI: fewer calibrations)
TARGETS = [0.5, 1.0, 2.0, 4.0, 8.0] if PRESET == "full" else [2.0]  # ε of the noise table (section 3)
nu.quiet_logs()
results = nu.privacy_utility_results()
print(f"notebook preset: {PRESET}; sweep results: {nu.PRIVACY_UTILITY_JSON} ({'found' if results else 'missing'})")

# %% [markdown]
# ## 1 · The privacy–utility table
#
# Held-out users (never trained on), words outside the 10,000-word dictionary excluded. ε is what
# the run itself recorded in its `metrics.json` (δ = 1e-7 < 1/N, user-level, each mechanism's own
# participation and accountant); top-1/top-3 are next-word accuracies, KSR the keystroke savings of
# the three-slot suggestion strip, perplexity per SentencePiece piece.

# %%
if results:
    nu.show_table(nu.PRIVACY_UTILITY_HEADERS, nu.privacy_utility_rows(results))
    print(results.get("command"), "·", results.get("machine"))

# %%
if results:
    nu.show(nu.plot_privacy_utility(results))

# %% [markdown]
# ## 2 · Learning curves at ε = 2
#
# Quick evaluations every 10 rounds (400 held-out messages) of the private runs at the main job's
# budget. A private model that pays rises above its public-only start and keeps rising.

# %%
import matplotlib.pyplot as plt

if results:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for mech, cells in sorted(results["private"].items()):
        curve = (cells.get("2") or {}).get("curve") or []
        if curve:
            ax.plot([c["round"] for c in curve], [c["top1"] for c in curve], marker="o", label=f"{mech}, ε = 2")
    for name, style in (("fedavg", "--"), ("public_only", ":")):
        if results.get(name, {}).get("top1") is not None:
            ax.axhline(results[name]["top1"], ls=style, color="grey", label=f"{name} (final, full evaluation)")
    ax.set_xlabel("round")
    ax.set_ylabel("quick-eval top-1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    nu.show(fig)

# %% [markdown]
# ## 3 · The noise a target ε needs
#
# ε depends only on the mechanism, its noise multiplier z, the participation (q, bands), the rounds
# and δ — not on the data — so the budget is set before any training. Calibrated below exactly as
# a training run calibrates (`keyboard_fl.privacy.report`, the same code as `keyboard-fl privacy`),
# for the main job's setting: N = 1,000,000, 1,000 users a round, 40 rounds, C = 0.5.
#
# *Noise on the average* is z·C / (users per round) per round. For correlated noise the fair figure
# is the *effective* noise: the independent per-round noise that would put the same error on the
# model's running sum.

# %%
N, COHORT, ROUNDS = 1_000_000, 1000, 40
rows = []
for mech, bands in (("dp-fedavg", 1), ("dp-ftrl-bandmf", 10)):
    for rep in nu.noise_for_targets(mech, TARGETS, population=N, cohort=COHORT, rounds=ROUNDS, bands=bands):
        rows.append(
            [
                mech,
                f"{rep['epsilon']:.3g}",
                f"{rep['noise_multiplier']:.3f}",
                f"{rep['noise_std_average']:.2e}",
                f"{rep['effective_noise_std_average']:.2e}",
                rep["accountant"],
            ]
        )
nu.show_table(["mechanism", "ε", "z", "noise std on the average", "effective", "accountant"], rows)

# %% [markdown]
# ## What to tell a product team
#
# - **ε bounds what the model reveals about any one user** — all their messages together, not one
#   message. Production federated keyboards report user-level ε from about 1 to 13.7 (Gboard, Xu et
#   al. 2023); this project's main job uses ε = 2, δ = 1e-7.
# - **The first lever is users per round.** The noise on the averaged update is z·C / (users per
#   round): at 1,000 users a round out of a million, ε = 2 costs a few points of top-1 against
#   FedAvg, while at 64 users a round the same run ended below its public-only start.
# - **Correlated noise is the second.** At the same ε and the same rounds, BandMF puts less
#   effective noise on the running sum than DP-FedAvg (section 3); the table shows what that buys.
# - **Fix the rounds first, then calibrate.** ε grows with every round a user may join; never stop
#   "when it looks good", which would leak through the choice.
# - **Report** ε with δ, the privacy unit (user), the mechanism and participation and the
#   accountant. What ε does not cover (hyperparameter tuning, the un-noised diagnostics) is listed
#   in the README's privacy section.

# %% [markdown]
# ---
# ## Empirical privacy: ε measured beside the ε we claim (issue 21)
#
# *This section is separate from the rest of the notebook and only reads audited runs.*
#
# The accounted ε is an upper bound. An audit **measures** privacy from the trained model, with two
# kinds of canaries (README § Empirical privacy):
#
# - **canary clients** (federated runs; Andrew et al., ICLR 2024): fixed random unit directions × C
#   sent as updates, Poisson-sampled with the real users' q, clipped and noised with them; half are
#   inserted. Scored schedule-blind (final model, all iterates; bound: the accounted ε) and given
#   each canary's rounds (bound: the *unamplified* ε over those rounds);
# - **planted phrases** (every run, central included): secret phrases typed 50 times by one user,
#   half of them planted; scored by log-likelihood against the public start (bound: the
#   replace-one-user ε).
#
# Each gives **ε_est** (Gaussians fitted to the in/out scores) and **ε_lower**, the one-run lower
# bound (Steinke, Nasr, Jagielski 2023; jax-privacy's `CanaryScoreAuditor`) at 95% confidence,
# which a correct DP implementation keeps under its bound. The main job's audited runs are made by
# `keyboard-fl main --empirical --out runs/main-emp`; smaller ones by the README's commands under
# `runs/audit/`.

# %%
from pathlib import Path

from rich.console import Console

from keyboard_fl import runs
from keyboard_fl.tables import empirical_table

audits = {}
for root in (Path("..") / "runs" / "main-emp", Path("..") / "runs" / "audit"):
    for name in ("central", "fedavg", "dp-fedavg"):
        audit = runs.load_metrics(root / name).get("audit", {}) if runs.is_finished(root / name) else {}
        if name not in audits and ("empirical" in audit or "phrases" in audit):
            audits[name] = audit
if audits:
    Console(width=150, force_jupyter=False, force_terminal=False).print(empirical_table(audits))  # plain text
else:
    print("no audited runs under runs/main-emp/ or runs/audit/ (see the README's Empirical privacy section)")
