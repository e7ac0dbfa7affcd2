"""The global models a user can personalise: a main job's runs and their public-only start.

A main job (``keyboard-fl main``) writes sibling runs (``central``,
``fedavg``, ``dp-fedavg``) that start from one public pretraining, cached in
``<root>/.pretrained/<hash>`` (:func:`keyboard_fl.train.run.pretrained_cache_dir`);
that start is the *public-only* model (trained on the public split only, ε = 0
on private data), reported by the central run as ``public_pretrained``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import jax

from keyboard_fl import checkpoint, runs
from keyboard_fl.config import RunConfig
from keyboard_fl.dictionary import Dictionary, run_word_list
from keyboard_fl.models import Params, init_params
from keyboard_fl.tokenizer import Tokenizer

PUBLIC_ONLY = "public-only"  # the name of the public pretraining among the global models

__all__ = ["GlobalModel", "PUBLIC_ONLY", "load_global_models"]


class GlobalModel(NamedTuple):
    """One global model, as every device receives it."""

    name: str  # "public-only", "central", "fedavg", "dp-fedavg", …
    graphdef: object  # flax.nnx GraphDef
    params: Params
    tokenizer: Tokenizer
    dictionary: Dictionary  # the run's public word list (the evaluation vocabulary)
    words: tuple[str, ...]  # the same list, most frequent first
    config: RunConfig  # the run's config (population, seq_len)
    privacy: str  # the privacy label (keyboard_fl.runs.privacy_label)


def _load_run(name: str, run_dir: Path) -> tuple[GlobalModel, object]:
    cfg = RunConfig.load(run_dir / runs.CONFIG_FILE)
    tok = Tokenizer.load(run_dir / runs.TOKENIZER_FILE)
    graphdef, template = init_params(dataclasses.replace(cfg.model, vocab_size=tok.vocab_size), jax.random.key(0))
    found = checkpoint.load_latest(run_dir / runs.MODEL_DIR, template)
    if found is None:
        raise runs.RunNotFound(f"{run_dir / runs.MODEL_DIR}: no usable model checkpoint")
    label = runs.privacy_label(runs.load_metrics(run_dir))
    words = tuple(run_word_list(run_dir))
    return GlobalModel(name, graphdef, found[1], tok, Dictionary(frozenset(words)), words, cfg, label), template


def load_global_models(root: str | Path, names: tuple[str, ...] | None = None) -> dict[str, GlobalModel]:
    """The public-only start and every finished run under ``root`` (or only ``names``), public-only first.

    The public-only model is included when a run's pretraining cache is found.
    Every model must share one tokenizer (they come from one main job).
    """
    from keyboard_fl.train.run import pretrained_cache_dir

    found = runs.discover_runs(root)
    if not found:
        raise runs.RunNotFound(f"{root}: no finished run (train one with keyboard-fl main --out {root})")
    models: dict[str, GlobalModel] = {}
    loaded = {name: _load_run(name, d) for name, d in found.items()}
    first, template = next(iter(loaded.values()))
    cache = pretrained_cache_dir(first.config, first.tokenizer, found[first.name])
    public = checkpoint.load_latest(cache, template) if cache.is_dir() else None
    if public is not None:
        models[PUBLIC_ONLY] = first._replace(name=PUBLIC_ONLY, params=public[1], privacy="public data only")
    for name, (m, _) in loaded.items():
        if m.tokenizer.model_proto != first.tokenizer.model_proto:
            raise ValueError(f"{found[name]}: its tokenizer differs from {found[first.name]}'s (not one main job)")
        models[name] = m
    if names is not None:
        missing = [n for n in names if n not in models]
        if missing:
            raise runs.RunNotFound(f"{root}: no model named {', '.join(missing)} (found: {', '.join(models)})")
        models = {n: models[n] for n in names}
    return models
