"""Load a finished run's model: the JAX suggester, and its ONNX export.

The run-directory layout and the metrics are :mod:`keyboard_fl.runs`; this
module adds what needs the model code (JAX, the config, the checkpoint).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import jax

from keyboard_fl import checkpoint
from keyboard_fl.config import RunConfig
from keyboard_fl.dictionary import run_dictionary, run_word_list
from keyboard_fl.models import init_params
from keyboard_fl.runs import CONFIG_FILE, EXPORT_DIR, MODEL_DIR, TOKENIZER_FILE, RunNotFound, load_metrics, model_info
from keyboard_fl.suggest import Suggester
from keyboard_fl.tokenizer import Tokenizer

__all__ = ["export_onnx", "load_suggester"]


def load_suggester(run_dir: str | Path):
    """``(Suggester, metrics)`` of a finished run (JAX); :class:`RunNotFound` if it is not one."""
    run_dir = Path(run_dir)
    metrics = load_metrics(run_dir)
    cfg = RunConfig.load(run_dir / CONFIG_FILE)
    tok = Tokenizer.load(run_dir / TOKENIZER_FILE)
    _check_against_model(run_dir, cfg, tok)
    model_cfg = dataclasses.replace(cfg.model, vocab_size=tok.vocab_size)
    graphdef, template = init_params(model_cfg, jax.random.key(0))  # shapes only: the weights come from the checkpoint
    errors: list[str] = []
    found = checkpoint.load_latest(run_dir / MODEL_DIR, template, errors)
    if found is None:
        why = f" ({errors[0]})" if errors else ""
        raise RunNotFound(f"{run_dir / MODEL_DIR}: no usable model checkpoint{why}")
    return Suggester(graphdef, found[1], tok, dictionary=run_dictionary(run_dir)), metrics


def _check_against_model(run_dir: Path, cfg: RunConfig, tok: Tokenizer) -> None:
    """The config's model section and the tokenizer must be the ones the model was trained with, as its
    checkpoint recorded them: the tokenizer's size and sha256 (a bit flip can leave it loadable but wrong)."""
    found = checkpoint.newest_meta(run_dir / MODEL_DIR)
    if found is None:
        return  # load_latest reports the checkpoint itself
    where, meta = found
    saved = meta.get("config", {}).get("model") if isinstance(meta.get("config"), dict) else None
    if isinstance(saved, dict) and saved != dataclasses.asdict(cfg.model):
        raise ValueError(
            f"{run_dir / CONFIG_FILE}: 'model' differs from the one recorded in {where} (edited or corrupt?)"
        )
    path = run_dir / TOKENIZER_FILE
    if isinstance(meta.get("vocab_size"), int) and meta["vocab_size"] != tok.vocab_size:
        raise ValueError(
            f"{path}: {tok.vocab_size} pieces, but {where} was trained with {meta['vocab_size']} "
            "(a tokenizer from another run or version?)"
        )
    sha = meta.get("tokenizer_sha256")
    if isinstance(sha, str) and sha != hashlib.sha256(tok.model_proto).hexdigest():
        raise ValueError(f"{path}: sha256 differs from the one recorded in {where} (corrupt or replaced?)")


def export_onnx(run_dir: str | Path, out_dir: str | Path | None = None, *, quantize: bool = True) -> dict:
    """Export a finished run to ONNX in ``out_dir`` (default ``<run>/export``); returns the manifest."""
    from keyboard_fl.export.onnx_export import ACCOUNTING_KEYS, export_run

    run_dir = Path(run_dir)
    suggester, metrics = load_suggester(run_dir)
    model_cfg = dataclasses.asdict(RunConfig.load(run_dir / CONFIG_FILE).model)
    info = model_info(run_dir.name, metrics) | {
        "model_config": model_cfg,
        "accounting": {k: metrics[k] for k in ACCOUNTING_KEYS if k in metrics},
    }
    out = Path(out_dir) if out_dir is not None else run_dir / EXPORT_DIR
    return export_run(
        suggester.graphdef,
        suggester.params,
        suggester.tokenizer,
        info,
        out,
        words=run_word_list(run_dir),
        search=suggester.config,
        quantize=quantize,
    )
