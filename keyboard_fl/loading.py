"""Load a finished run's model: the JAX suggester, and its ONNX export.

The run-directory layout and the metrics are :mod:`keyboard_fl.runs`; this
module adds what needs the model code (JAX, the config, the checkpoint).
"""

from __future__ import annotations

import dataclasses
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
    model_cfg = dataclasses.replace(cfg.model, vocab_size=tok.vocab_size)
    graphdef, template = init_params(model_cfg, jax.random.key(0))  # shapes only: the weights come from the checkpoint
    found = checkpoint.load_latest(run_dir / MODEL_DIR, template)
    if found is None:
        raise RunNotFound(f"{run_dir / MODEL_DIR}: no usable model checkpoint")
    return Suggester(graphdef, found[1], tok, dictionary=run_dictionary(run_dir)), metrics


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
