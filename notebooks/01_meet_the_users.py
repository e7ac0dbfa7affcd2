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
# # 01 · Meet the users
#
# The keyboard learns from simulated typists (`keyboard_fl.data.Population`): each user is a pure
# function of (population seed, user id), with a persona — topics, friends' and pets' names,
# abbreviations, emoji, message lengths — and a heavy-tailed number of messages. This notebook shows
# what makes the data **non-IID**: users differ in how much they type and in what words they use,
# and many words belong to a single user. That is exactly the data a private keyboard must learn
# from without memorising any one person.

# %% tags=["parameters"]
import os

from keyboard_fl import notebook_utils as nu

PRESET = nu.notebook_preset()  # $KEYBOARD_FL_NOTEBOOK_PRESET: "full" (default) or "tiny" (CI)
MAX_USERS = 2000 if PRESET == "full" else 300  # users scanned for statistics
print(f"notebook preset: {PRESET} → population of the {nu.training_preset(PRESET)!r} training preset")

# %%
import matplotlib.pyplot as plt
import numpy as np

from keyboard_fl.config import preset
from keyboard_fl.data import Population, compute_stats

cfg = preset(nu.training_preset(PRESET))
pop = Population(cfg.population)
nu.show_table(["split", "users"], [[s, pop.num_users(s)] for s in ("train", "heldout", "public")])

# %% [markdown]
# ## Population statistics (training users)
#
# `compute_stats` scans the first users of the training split: counts, per-user distributions,
# vocabulary, the mean pairwise vocabulary overlap (Jaccard) and the share of *personal* words
# (word types used by a single user).

# %%
stats = compute_stats(pop, "train", max_users=MAX_USERS)
rows = [
    ["users scanned", stats["users"]],
    ["messages", stats["messages"]],
    ["words", stats["words"]],
    ["vocabulary (distinct words)", stats["vocabulary_size"]],
    ["messages per user: median / p90 / p99 / max",
     " / ".join(f"{stats['messages_per_user'][k]:g}" for k in ("median", "p90", "p99", "max"))],
    ["words per user: median / p90 / p99 / max",
     " / ".join(f"{stats['words_per_user'][k]:g}" for k in ("median", "p90", "p99", "max"))],
    ["mean pairwise vocabulary overlap (Jaccard)", f"{stats['mean_pairwise_jaccard']:.3f}"],
    ["word types used by one user only", nu.pct(stats["personal_word_fraction"])],
    ["… share of the words typed", nu.pct(stats["personal_token_fraction"])],
]
nu.show_table(["statistic", "value"], rows)

# %% [markdown]
# ## How much each user types
#
# A few heavy typists write hundreds of messages; most write a handful. Centralised training would
# let the heavy typists dominate; federated training gives each user **one** (clipped) update per
# round, whatever the size of their data — which is also what bounds one user's influence for DP.

# %%
counts = nu.message_counts(pop, "train", max_users=MAX_USERS)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
axes[0].hist(counts, bins=40)
axes[0].set_xlabel("messages per user")
axes[0].set_ylabel("users")
axes[0].set_title("messages per user")
srt = np.sort(counts)[::-1]
axes[1].plot(np.arange(1, len(srt) + 1) / len(srt), np.cumsum(srt) / srt.sum())
axes[1].set_xlabel("fraction of users (heaviest first)")
axes[1].set_ylabel("fraction of all messages")
axes[1].set_title("who writes the messages")
for ax in axes:
    ax.grid(alpha=0.3)
fig.tight_layout()
nu.show(fig)
top10 = srt[: max(1, len(srt) // 10)].sum() / srt.sum()
print(f"the heaviest 10% of users write {100 * top10:.0f}% of the messages")

# %% [markdown]
# ## Vocabulary overlap and personal words
#
# Left: pairwise Jaccard overlap of the vocabularies of 30 users — most pairs share only a small
# part of their words. Right: for each distinct word, how many users use it: the mass at 1 is the
# personal vocabulary (names, streets, teams, in-jokes) that a private model should *not* learn.

# %%
vocabs = nu.user_vocabularies(pop, "train", max_users=MAX_USERS)
first = list(vocabs.values())[:30]
jac = nu.jaccard_matrix(first)
upw = np.array(nu.users_per_word(vocabs))
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
im = axes[0].imshow(jac, vmin=0, vmax=0.5, cmap="viridis")
axes[0].set_title("vocabulary overlap (Jaccard), 30 users")
axes[0].set_xlabel("user")
axes[0].set_ylabel("user")
fig.colorbar(im, ax=axes[0], fraction=0.046)
axes[1].hist(upw, bins=np.logspace(0, np.log10(max(upw.max(), 2)) + 0.01, 30))
axes[1].set_xscale("log")
axes[1].set_yscale("log")
axes[1].set_xlabel("users using the word")
axes[1].set_ylabel("distinct words")
axes[1].set_title("how widely each word is used")
axes[1].grid(alpha=0.3)
fig.tight_layout()
nu.show(fig)
off = jac[~np.eye(len(jac), dtype=bool)]
print(f"Jaccard overlap between these users: median {np.median(off):.3f}, max {off.max():.3f}; "
      f"{100 * np.mean(upw == 1):.0f}% of distinct words are used by one user only")

# %% [markdown]
# Each user's most frequent **personal** words (used by no other scanned user):

# %%
pw = nu.personal_words(vocabs, top=5)
rows = [[uid, ", ".join(f"{w} ({c})" for w, c in ws) or "—"] for uid, ws in list(pw.items())[:10]]
nu.show_table(["user", "personal words (uses)"], rows)

# %% [markdown]
# ## Sample messages
#
# One message from each of the first users (from `compute_stats`), then a few consecutive messages
# of one user: the persona shows through the topics, names and habits.

# %%
nu.show_table(["#", "message"], [[i + 1, m] for i, m in enumerate(stats["sample_messages"])])
u = next(iter(pop.users("train")))
nu.show_table([f"user {u.user_id}: first messages"], [[m] for m in u.train[:8]])

# %% [markdown]
# ## The public split
#
# The tokenizer (SentencePiece) and the optional public pretraining see **only** the public users,
# disjoint from the private training users. The evaluation word vocabulary (the 10k most frequent
# public words) comes from here too; training users' words outside it are out-of-vocabulary.

# %%
pub = compute_stats(pop, "public", max_users=MAX_USERS)
vocab = nu.word_vocab(pop)
train_words = [w for v in vocabs.values() for w, c in v.items() for _ in range(c)]
oov = np.mean([w not in vocab for w in train_words]) if train_words else float("nan")
pub_types = set(w for w in vocab)
shared = len(set().union(*[set(v) for v in vocabs.values()]) & pub_types)
nu.show_table(["", "training users (scanned)", "public users (scanned)"], [
    ["users", stats["users"], pub["users"]],
    ["messages", stats["messages"], pub["messages"]],
    ["vocabulary", stats["vocabulary_size"], pub["vocabulary_size"]],
    ["mean pairwise Jaccard", f"{stats['mean_pairwise_jaccard']:.3f}", f"{pub['mean_pairwise_jaccard']:.3f}"],
])
print(f"evaluation vocabulary: {len(vocab):,} public words; {nu.pct(oov)} of the scanned training users' "
      f"running words fall outside it; {shared:,} of the training words also occur in it")
nu.show_table(["public sample message"], [[m] for m in pub["sample_messages"][:6]])
