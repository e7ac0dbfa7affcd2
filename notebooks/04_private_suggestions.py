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
# # 04 · Private suggestions, side by side
#
# What a user actually sees: the three-word suggestion strip. This notebook loads the central,
# FedAvg and DP-FedAvg models (`keyboard_fl.loading.load_suggester`) and shows their
# suggestions for the same texts — after a space (next word) and inside a partial word
# (completions).

# %% tags=["parameters"]
from keyboard_fl import notebook_utils as nu

PRESET = nu.notebook_preset()  # $KEYBOARD_FL_NOTEBOOK_PRESET: "full" (default) or "tiny" (CI)
print(f"notebook preset: {PRESET}")

# %%
import time

import numpy as np

from keyboard_fl.loading import load_suggester

runs = nu.main_runs(PRESET)  # trains what is missing (tiny: ~30 s)
suggesters, metrics = {}, {}
for mode, d in runs.items():
    suggesters[mode], metrics[mode] = load_suggester(d)
nu.show_table(["model", "run", "top-1", "KSR", "privacy"],
              [[nu.mode_label(m), nu.display_path(runs[m]), nu.pct(metrics[m]["top1"]), nu.pct(metrics[m].get("ksr")),
                nu.privacy_label(metrics[m])] for m in runs])

# %% [markdown]
# ## Next word and completions
#
# A text ending in a space asks for the next word; a text ending inside a word asks for completions
# of that prefix.

# %%
TEXTS = [
    "see you ", "see you tom", "thanks so ", "can you ", "i will be there in ", "happy birthday ",
    "what time ", "let me know ", "on my ", "good morning ", "i love ", "are we still on for ", "dinner at ",
    "how was ", "omg ",
]
headers = ["text"] + [nu.mode_label(m) for m in suggesters]
nu.show_table(headers, nu.suggestion_rows(suggesters, TEXTS))

# %% [markdown]
# ## On real held-out messages
#
# The first words of messages from users none of the models trained on, cut before their last word:
# which strip would have offered the word the user actually typed (**bold**)?

# %%
from keyboard_fl.text import words

source, users = nu.heldout_messages(runs[nu.CENTRAL], max_users=40, max_messages=2)
samples = []
for msgs in users.values():
    for m in msgs:
        ws = m.split(" ")
        if 4 <= len(ws) <= 14:
            samples.append((" ".join(ws[:-1]) + " ", ws[-1]))
    if len(samples) >= 10:
        break
samples = samples[:10]
rows, hits = [], {m: 0 for m in suggesters}
for ctx, target in samples:
    target_word = (words(target) or [target])[0]
    row = [repr(ctx), target_word]
    for mode, s in suggesters.items():
        sug = s.suggest(ctx, 3)
        hits[mode] += target_word in sug
        row.append(" · ".join(f"**{w}**" if w == target_word else w for w in sug) or "—")
    rows.append(row)
nu.show_table(["context", "typed"] + [nu.mode_label(m) for m in suggesters], rows)
print("in the strip:", ", ".join(f"{nu.mode_label(m)} {hits[m]}/{len(samples)}" for m in suggesters))

# %% [markdown]
# ## Latency
#
# A strip must update on every key press (well under ~20 ms). Median time of one `suggest` call
# here (after warm-up), per model:

# %%
rows = []
for mode, s in suggesters.items():
    for t in TEXTS[:3]:
        s.suggest(t, 3)  # warm-up (jit)
    ts = []
    for t in TEXTS * 2:
        t0 = time.perf_counter()
        s.suggest(t, 3)
        ts.append(1000 * (time.perf_counter() - t0))
    rows.append([nu.mode_label(mode), f"{np.median(ts):.2f} ms", f"{np.percentile(ts, 90):.2f} ms"])
nu.show_table(["model", "median", "p90"], rows)

# %% [markdown]
# The DP-FedAvg model's suggestions are those a keyboard could ship with a formal guarantee: no
# single user's messages — including their friends' names or street — can change them by more
# than ε allows. Where its strip is blander than the central model's, that is the price of the
# budget (notebook 03).
