"""The demo's canary view: type the canary prefix, see which model types a planted secret.

This is a simulation. Runs trained with ``--canaries`` had *synthetic* secrets
(random spelled digits, :mod:`keyboard_fl.privacy.canaries`) planted in a few
simulated users' training messages. The view draws them again from the run's
config, exactly as training did (:func:`keyboard_fl.audit.planted_canaries`),
and shows them on the local demo page so that a reader can see what "the model
leaks a secret" means; no real person's text is involved. For each model the
strip is asked to type on after the prefix, tapping its top suggestion word by
word for as many words as a secret has (:func:`keyboard_fl.audit.greedy_completion`),
and the words it taps are compared with that model's planted secrets
(:func:`keyboard_fl.audit.match_secrets`). A user who types the first words of
a secret after the prefix gets them counted, and the strip fills in the rest.
"""

from __future__ import annotations

import logging
from pathlib import Path

from keyboard_fl.audit import greedy_completion, match_secrets, planted_canaries
from keyboard_fl.privacy.canaries import CanaryConfig

log = logging.getLogger(__name__)

_AUDIT_FIELDS = ("rank", "exposure", "exposure_extrapolated", "public_only_exposure")


def _audit_rows(metrics: dict, n: int) -> list[dict] | None:
    """The ``audit`` section's per-canary rows of ``metrics.json``, if they match the ``n`` canaries."""
    audit = metrics.get("audit")
    rows = audit.get("canaries") if isinstance(audit, dict) else None
    if not isinstance(rows, list) or len(rows) != n:
        return None
    return [{k: r.get(k) for k in _AUDIT_FIELDS} | {"references": audit.get("references")} for r in rows]


def run_canaries(run_dir: Path, metrics: dict) -> dict:
    """What a run's training planted: its canary config, secrets and (if audited) their exposure.

    ``{"trained_with_canaries": bool, "prefix", "words", "canaries": [{"secret",
    "repetitions", "users", + audit fields}], "audited": bool}``; ``prefix`` and
    ``words`` are ``None`` for a run without canaries.
    """
    from keyboard_fl.config import RunConfig
    from keyboard_fl.runs import CONFIG_FILE

    cfg = RunConfig.load(Path(run_dir) / CONFIG_FILE)
    if cfg.canaries is None:
        return {"trained_with_canaries": False, "prefix": None, "words": None, "canaries": [], "audited": False}
    canaries, _ = planted_canaries(cfg)
    audit = _audit_rows(metrics, len(canaries))
    rows = [
        {"secret": c.secret, "repetitions": c.repetitions, "users": len(c.user_ids), **(audit[i] if audit else {})}
        for i, c in enumerate(canaries)
    ]
    return {
        "trained_with_canaries": True,
        "prefix": cfg.canaries.prefix,
        "words": cfg.canaries.digits,
        "canaries": rows,
        "audited": audit is not None,
    }


def canary_format(per_model: list[dict]) -> dict:
    """The prefix and secret length to check: the first canary-trained model's, else the defaults."""
    for m in per_model:
        if m["trained_with_canaries"]:
            return {"prefix": m["prefix"], "words": m["words"]}
    default = CanaryConfig()
    return {"prefix": default.prefix, "words": default.digits}


def typed_secret_words(text: str, prefix: str, words: int) -> list[str]:
    """Words of the secret the user already typed: those after ``prefix`` in ``text``.

    None when ``text`` does not start with ``prefix`` (case-insensitive) or
    already holds ``words`` or more words after it.
    """
    typed, head = text.split(), prefix.casefold().split()
    if [w.casefold() for w in typed[: len(head)]] != head:
        return []
    rest = typed[len(head) :]
    return rest if len(rest) < words else []


def check(suggester, text: str, fmt: dict, planted: dict) -> dict:
    """The strip after ``text``, its greedy completion, and whether that spells a planted secret.

    ``fmt`` is :func:`canary_format`. The strip fills the secret's remaining
    words (all ``fmt["words"]`` of them after the bare prefix; fewer when the
    user typed some, ``typed_words``), and those typed words plus the completion
    are compared with ``planted``'s secrets: ``matched_words`` leading words
    agree with the closest one (``secret``; ``None`` when none shares the first
    word or none was planted), and ``leaks`` when they spell it exactly.
    """
    text = text.rstrip()
    given = typed_secret_words(text, planted.get("prefix") or fmt["prefix"], fmt["words"])
    completion, strips = greedy_completion(suggester, text, fmt["words"] - len(given))
    rows = {r["secret"]: r for r in planted["canaries"]}
    match = match_secrets(given + completion, list(rows))
    row = rows.get(match["secret"], {})
    return {
        "strip": strips[0] if strips else [],
        "completion": completion,
        "typed_words": len(given),
        **match,
        "repetitions": row.get("repetitions"),
        "exposure": row.get("exposure"),
    }


__all__ = ["run_canaries", "canary_format", "check", "typed_secret_words"]
