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
# # 02 · Central vs FedAvg vs DP-FedAvg
#
# Three ways to train the same CIFG-LSTM next-word model, all starting from the same public
# pretraining:
#
# - **central** — the training users' messages pooled on a server (not private; the upper bound);
# - **FedAvg** — messages never leave the phones; each round a Poisson-sampled cohort trains locally
#   and the server averages the updates (not differentially private);
# - **DP-FedAvg** — FedAvg with each user's update clipped to norm C and Gaussian noise added to the
#   sum: user-level (ε, δ)-differential privacy.
#
# With `full` (the default) this notebook reads the README main job's runs in `runs/main/`; with
# `tiny` it trains tiny runs (seconds) into a temporary directory.

# %% tags=["parameters"]
from keyboard_fl import notebook_utils as nu

PRESET = nu.notebook_preset()  # $KEYBOARD_FL_NOTEBOOK_PRESET: "full" (default) or "tiny" (CI)
print(f"notebook preset: {PRESET}")

# %%
import matplotlib.pyplot as plt
import numpy as np

runs = nu.main_runs(PRESET)  # trains what is missing (tiny: ~30 s)
for mode, d in runs.items():
    print(f"{nu.mode_label(mode):>10}: {nu.display_path(d)}")

# %% [markdown]
# ## Final quality on held-out users
#
# Whole-word top-1 / top-3 on users never trained on (out-of-vocabulary targets excluded), keystroke
# savings (KSR), piece perplexity, the spread of top-1 across users (10th percentile, median, 90th)
# and the privacy guarantee.

# %%
nu.show_table(nu.RESULTS_HEADERS, nu.results_rows(runs))
m0 = nu.load_metrics(runs[nu.CENTRAL])
extra = [["Kneser–Ney word trigram", nu.pct(m0.get("ngram_top1")), nu.pct(m0.get("ngram_top3")),
          nu.pct(m0.get("ngram_ksr")), "not private"]]
if m0.get("public_pretrained"):
    pp = m0["public_pretrained"]
    extra.append(["public-only model (the common start)", nu.pct(pp["top1"]), nu.pct(pp["top3"]), "—", "uses no user data"])
nu.show_table(["baseline", "top-1", "top-3", "KSR", "privacy"], extra)

# %% [markdown]
# ## Learning curves
#
# Each federated run logs a quick evaluation (a few hundred held-out messages) every few rounds to
# its `metrics.jsonl`. The central run trains in steps, not rounds, so it is drawn as its final
# value; the dotted line is the public-only model every run starts from. Right: the privacy spent by
# the DP run, round by round (ε composes over rounds).

# %%
fed = {m: d for m, d in runs.items()}
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
nu.plot_learning_curves(fed, "eval_top1", ax=axes[0])
axes[0].set_title("top-1 (quick eval)")
nu.plot_learning_curves(fed, "eval_perplexity", ax=axes[1])
axes[1].set_title("perplexity / piece (quick eval)")
h = nu.load_history(runs[nu.DP_FEDAVG])
if h and "epsilon" in h[0]:
    axes[2].plot([r["round"] for r in h], [r["epsilon"] for r in h], marker="o", ms=3, color="C1")
axes[2].set_xlabel("round")
axes[2].set_ylabel("ε spent (δ fixed)")
axes[2].set_title("DP-FedAvg privacy budget")
axes[2].grid(alpha=0.3)
fig.tight_layout()
nu.show(fig)

# %% [markdown]
# The rounds also record what each cohort did: update norms against the clip norm (DP-FedAvg clips
# every update to C; the noise std on the *average* is z·C/(q·N)).

# %%
rows = []
for mode in (nu.FEDAVG, nu.DP_FEDAVG):
    h = nu.load_history(runs[mode])
    if h:
        last = h[-1]
        rows.append([nu.mode_label(mode), last["round"], f"{np.mean([r['cohort_size'] for r in h]):.1f}",
                     last["update_norm_median"], nu.pct(last["clipped_fraction"]), last["noise_std_average"],
                     last["server_update_norm"]])
nu.show_table(["run", "last round", "mean cohort", "median update norm", "clipped", "noise std (average)",
               "server update norm"], rows)

# %% [markdown]
# ## Who gains: per-user top-1
#
# Averages hide users. Below, each model's top-1 on each held-out user (their first messages, as in
# the run's evaluation), computed with `TopKCounter` over `predict_messages`. A wide spread is
# expected: users with a distinctive vocabulary are hard for any shared model.

# %%
from keyboard_fl.loading import load_suggester

source, users = nu.heldout_messages(runs[nu.CENTRAL])
vocab = nu.word_vocab(source)
models = {mode: load_suggester(d)[0] for mode, d in runs.items()}
per_user = {mode: nu.per_user_top1(s, users, vocab, min_targets=5 if PRESET == "full" else 1)
            for mode, s in models.items()}
fig = nu.plot_per_user_hist(per_user)
nu.show(fig)
rows = []
for mode, v in per_user.items():
    a = np.array(list(v.values()))
    rows.append([nu.mode_label(mode), a.size, *(nu.pct(np.percentile(a, q)) for q in (10, 25, 50, 75, 90))])
nu.show_table(["model", "users", "p10", "p25", "median", "p75", "p90"], rows)

# %%
common = sorted(set.intersection(*[set(v) for v in per_user.values()]))
c = np.array([per_user[nu.CENTRAL][u] for u in common])
for mode in (nu.FEDAVG, nu.DP_FEDAVG):
    d = np.array([per_user[mode][u] for u in common]) - c
    print(f"{nu.mode_label(mode)} vs central, per user: median difference {100 * np.median(d):+.1f} points; "
          f"{100 * np.mean(d >= 0):.0f}% of users do at least as well")
