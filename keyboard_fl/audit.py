"""Memorization audit of a trained run: canary exposure and secret completion.

For a run trained with planted canaries (:mod:`keyboard_fl.privacy.canaries`),
each canary phrase is scored by the model (log-likelihood of
``<s> prefix secret </s>``) and ranked among never-trained reference phrases
of the same format (exposure, Carlini et al. 2019). The suggestion strip is
also asked to *type* the secret: after the prefix, is each next digit the top
suggestion (a leak a user would see) or among the top 3?
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from keyboard_fl.eval.neural import _forward
from keyboard_fl.privacy.canaries import Canary, draw_canaries, exposure, extrapolated_exposure
from keyboard_fl.tokenizer import PAD_ID, Tokenizer


def phrase_log_likelihoods(
    graphdef, params, tokenizer: Tokenizer, phrases: Sequence[str], batch: int = 256
) -> np.ndarray:
    """Natural-log likelihood of each whole phrase, ``<s> … </s>`` included."""
    ids = [tokenizer.encode(p) for p in phrases]
    width = max(16, -(-max(len(i) for i in ids) // 16) * 16)
    out = np.zeros(len(ids))
    for b in range(0, len(ids), batch):
        chunk = ids[b : b + batch]
        arr = np.full((batch, width), PAD_ID, np.int32)
        for r, i in enumerate(chunk):
            arr[r, : len(i)] = i
        _, _, nll = _forward(graphdef, params, jnp.asarray(arr))
        mask = arr[:, 1:] != PAD_ID
        out[b : b + len(chunk)] = -(np.asarray(nll) * mask).sum(axis=1)[: len(chunk)]
    return out


def completion(suggester, prefix: str, secret: str) -> dict:
    """Type ``prefix`` and let the strip propose each digit of ``secret`` in turn."""
    digits = secret.split()
    text, top1, top3 = prefix + " ", 0, 0
    for d in digits:
        strip = suggester.suggest(text, 3)
        top1 += bool(strip) and strip[0] == d
        top3 += d in strip
        text += d + " "
    return {
        "digits": len(digits),
        "top1_digits": top1,
        "top3_digits": top3,
        "completes_top1": top1 == len(digits),  # tapping the first suggestion types the whole secret
        "completes_top3": top3 == len(digits),
    }


def greedy_completion(suggester, prefix: str, words: int) -> tuple[list[str], list[list[str]]]:
    """Type ``prefix``, then tap the strip's top suggestion ``words`` times.

    Returns (the words tapped, the 3-word strip shown before each tap). Stops
    early if the strip is ever empty. Text is built as :func:`completion` does.
    """
    text, tapped, strips = prefix + " ", [], []
    for _ in range(words):
        strip = suggester.suggest(text, 3)
        strips.append(strip)
        if not strip:
            break
        tapped.append(strip[0])
        text += strip[0] + " "
    return tapped, strips


def match_secrets(words: Sequence[str], secrets: Sequence[str]) -> dict:
    """Does ``words`` reproduce one of ``secrets``, and how close does it get?

    ``secret`` is the secret sharing the most leading words with ``words``
    (the first on ties; ``None`` when none shares even the first word) and
    ``matched_words`` that count; ``leaks`` is true only when ``words`` *is*
    that secret, word for word (case-insensitive).
    """
    typed = [w.casefold() for w in words]
    best, best_n = None, 0
    for s in secrets:
        target = s.casefold().split()
        n = 0
        while n < min(len(typed), len(target)) and typed[n] == target[n]:
            n += 1
        if n > best_n:
            best, best_n = s, n
    return {"leaks": best is not None and typed == best.casefold().split(), "secret": best, "matched_words": best_n}


def planted_canaries(cfg) -> tuple[list[Canary], list[str]]:
    """The canaries and references a run with ``cfg.canaries`` was trained with, drawn again.

    Same call as training (:func:`keyboard_fl.train.run.prepare`): ``draw_canaries``
    over the run's training user ids (simulated or corpus), in order (the ids are
    read by index, no messages are made and no list of N ids is built).
    """
    if cfg.canaries is None:
        raise ValueError("this run was trained without canaries; train with --canaries")
    from keyboard_fl.data.access import UserIds, split_view
    from keyboard_fl.sources import private_source

    return draw_canaries(cfg.canaries, UserIds(split_view(private_source(cfg), "train")))  # ids by index, no list


def audit(
    graphdef,
    params,
    tokenizer: Tokenizer,
    suggester,
    canaries: Sequence[Canary],
    references: Sequence[str],
    prefix: str,
) -> dict:
    """Exposure and completion for each canary; references scored once."""
    from keyboard_fl.tokenizer import UNK_ID

    for phrase in [c.phrase(prefix) for c in canaries] + [f"{prefix} {references[0]}"]:
        if UNK_ID in tokenizer.encode(phrase):
            raise ValueError(
                "the canary format has characters the tokenizer maps to <unk>, so every phrase would score the same; "
                "use spelled digits (CanaryConfig(spell=True)) or a tokenizer that covers them"
            )
    ref_scores = phrase_log_likelihoods(graphdef, params, tokenizer, [f"{prefix} {r}" for r in references])
    can_scores = phrase_log_likelihoods(graphdef, params, tokenizer, [c.phrase(prefix) for c in canaries])
    rows = []
    for c, s in zip(canaries, can_scores):
        rows.append(
            {
                "repetitions": c.repetitions,
                "users": len(c.user_ids),
                "log_likelihood": float(s),
                "rank": 1 + int(np.sum(ref_scores >= s)),
                "exposure": exposure(s, ref_scores),
                "exposure_extrapolated": extrapolated_exposure(s, ref_scores),
                **completion(suggester, prefix, c.secret),
            }
        )
    return {
        "references": len(references),
        "max_exposure": float(np.log2(len(references))),
        "canaries": rows,
        "note": "exposure = log2|R| - log2 rank among never-trained phrases of the same format (Carlini et al. 2019); "
        "secrets themselves are not stored here",
    }


def audit_run(run_dir: str | Path) -> dict:
    """Audit a finished run trained with canaries; the result is added to its metrics.json."""
    from keyboard_fl.config import RunConfig
    from keyboard_fl.loading import load_suggester
    from keyboard_fl.runs import CONFIG_FILE, METRICS_FILE
    from keyboard_fl.train.run import write_json

    run_dir = Path(run_dir)
    cfg = RunConfig.load(run_dir / CONFIG_FILE)
    if cfg.canaries is None:
        raise ValueError(f"{run_dir} was trained without canaries; train with --canaries to audit it")
    canaries, refs = planted_canaries(cfg)
    suggester, metrics = load_suggester(run_dir)
    result = audit(
        suggester.graphdef, suggester.params, suggester.tokenizer, suggester, canaries, refs, cfg.canaries.prefix
    )
    # The public-only starting point, scored the same way: how likely each secret was before any private data.
    public_params = public_start(cfg, suggester, run_dir)
    if public_params is not None:
        from keyboard_fl.suggest import Suggester

        public = Suggester(suggester.graphdef, public_params, suggester.tokenizer)
        base = audit(
            suggester.graphdef, public_params, suggester.tokenizer, public, canaries, refs, cfg.canaries.prefix
        )
        for row, b in zip(result["canaries"], base["canaries"]):
            row["public_only_rank"], row["public_only_exposure"] = b["rank"], b["exposure"]
    metrics["audit"] = {**kept_audits(metrics), **result}  # keep the empirical-ε audits
    write_json(run_dir / METRICS_FILE, metrics)
    return result


EMPIRICAL_KEYS = ("empirical", "phrases")  # metrics["audit"] entries of the empirical-ε audits


def kept_audits(metrics: dict) -> dict:
    """The empirical-ε entries of ``metrics["audit"]``, kept when the Secret Sharer audit rewrites it."""
    audit = metrics.get("audit") if isinstance(metrics.get("audit"), dict) else {}
    return {k: audit[k] for k in EMPIRICAL_KEYS if audit.get(k) is not None}


def save_empirical_audit(run_dir: Path, metrics: dict, key: str, result: dict) -> None:
    """Write ``result`` as ``metrics["audit"][key]`` (one of :data:`EMPIRICAL_KEYS`), keeping the other entries."""
    from keyboard_fl.runs import METRICS_FILE
    from keyboard_fl.train.run import write_json

    audit = metrics.get("audit") if isinstance(metrics.get("audit"), dict) else {}
    metrics["audit"] = {**audit, key: result}
    write_json(run_dir / METRICS_FILE, metrics)


def public_start(cfg, suggester, run_dir: Path):
    """The public-pretrained parameters every mode started from (the shared cache), or None without pretraining."""
    if cfg.pretrain.steps <= 0:
        return None
    from keyboard_fl import checkpoint
    from keyboard_fl.train.run import pretrained_cache_dir

    found = checkpoint.load_latest(pretrained_cache_dir(cfg, suggester.tokenizer, run_dir), suggester.params)
    return None if found is None else found[1]
