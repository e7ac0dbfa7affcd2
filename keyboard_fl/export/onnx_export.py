"""Export a trained CIFG-LSTM run to ONNX for on-device suggestions.

The graph is one *step* of the model, ``(token [B], c [B,H], h [B,E]) ->
(logits [B,V], c, h)``, built directly with ``onnx.helper`` from the trained
weights (a Gather, four MatMuls and the CIFG gate arithmetic), mirroring
:meth:`keyboard_fl.models.cifg_lstm.CifgLstm.step`. A per-step graph keeps every
weight in a top-level ``MatMul``/``Gather``, which onnxruntime's
``quantize_dynamic`` turns into int8 (weights inside a ``Loop`` body would stay
float). The keyboard runs the step once per context piece and once per beam
depth (:mod:`keyboard_fl.export.runner`).

Files under ``<run_dir>/export/``: ``model.onnx`` (float32), ``model.int8.onnx``
(dynamic int8 weights), ``tokenizer.model``, ``tokenizer.json`` and ``words.txt`` (for the
in-page keyboard, :mod:`keyboard_fl.export.web`) and ``manifest.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keyboard_fl.strip import SearchConfig

_INFO_KEYS = ("name", "mode", "private", "epsilon", "delta", "privacy", "top1", "top3", "ksr", "params")
ACCOUNTING_KEYS = ("accountant", "neighbouring", "noise_multiplier", "clip_norm")  # copied from a run's metrics
OPSET = 17
FLOAT_NAME, INT8_NAME, MANIFEST_NAME, TOKENIZER_NAME = (
    "model.onnx",
    "model.int8.onnx",
    "manifest.json",
    "tokenizer.model",
)


def cifg_weights(model) -> dict[str, np.ndarray]:
    """float32 numpy weights of a :class:`CifgLstm` (raises for other model kinds)."""
    from keyboard_fl.models.cifg_lstm import CifgLstm

    if not isinstance(model, CifgLstm):
        raise ValueError(f"ONNX export supports the CIFG-LSTM only, not {type(model).__name__}")
    names = ("embedding", "w_input", "w_recurrent", "gate_bias", "w_projection", "output_bias")
    return {n: np.asarray(getattr(model, n)[...], np.float32) for n in names}


def build_step_graph(w: dict[str, np.ndarray]):
    """ONNX ModelProto of one CIFG step: (token, c, h) -> (logits, c_out, h_out)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    v, e = w["embedding"].shape
    hid = w["w_projection"].shape[0]
    inits = [
        numpy_helper.from_array(w["embedding"], "embedding"),
        numpy_helper.from_array(np.ascontiguousarray(w["embedding"].T), "embedding_t"),
        numpy_helper.from_array(w["w_input"], "w_input"),
        numpy_helper.from_array(w["w_recurrent"], "w_recurrent"),
        numpy_helper.from_array(w["gate_bias"], "gate_bias"),
        numpy_helper.from_array(w["w_projection"], "w_projection"),
        numpy_helper.from_array(w["output_bias"], "output_bias"),
        numpy_helper.from_array(np.array([hid, hid, hid], np.int64), "split_sizes"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
    ]
    n = helper.make_node
    nodes = [
        n("Cast", ["token"], ["token64"], to=TensorProto.INT64),
        n("Gather", ["embedding", "token64"], ["x"], axis=0),
        n("MatMul", ["x", "w_input"], ["xw"]),
        n("MatMul", ["h", "w_recurrent"], ["hw"]),
        n("Add", ["xw", "gate_bias"], ["xwb"]),
        n("Add", ["xwb", "hw"], ["z"]),
        n("Split", ["z", "split_sizes"], ["zi", "zg", "zo"], axis=-1),
        n("Sigmoid", ["zi"], ["i"]),
        n("Tanh", ["zg"], ["g"]),
        n("Sigmoid", ["zo"], ["o"]),
        n("Sub", ["one", "i"], ["f"]),
        n("Mul", ["f", "c"], ["fc"]),
        n("Mul", ["i", "g"], ["ig"]),
        n("Add", ["fc", "ig"], ["c_out"]),
        n("Tanh", ["c_out"], ["tc"]),
        n("Mul", ["o", "tc"], ["m"]),
        n("MatMul", ["m", "w_projection"], ["h_out"]),
        n("MatMul", ["h_out", "embedding_t"], ["hl"]),
        n("Add", ["hl", "output_bias"], ["logits"]),
    ]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "cifg_step",
        [
            helper.make_tensor_value_info("token", TensorProto.INT32, ["batch"]),
            helper.make_tensor_value_info("c", f, ["batch", hid]),
            helper.make_tensor_value_info("h", f, ["batch", e]),
        ],
        [
            helper.make_tensor_value_info("logits", f, ["batch", v]),
            helper.make_tensor_value_info("c_out", f, ["batch", hid]),
            helper.make_tensor_value_info("h_out", f, ["batch", e]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="keyboard_fl")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


FORMAT = "keyboard_fl.onnx-step/1"  # manifest "format": what this version writes and reads


def read_manifest(export_dir: str | Path) -> dict:
    """An export's ``manifest.json``, after checking its format and every file it lists (size, sha256).

    A damaged export — an empty, truncated or bit-flipped file, or one written by another
    version — is a ValueError naming the file.
    """
    from keyboard_fl.runs import read_json_object

    export_dir = Path(export_dir)
    path = export_dir / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no export manifest (run keyboard-fl export)")
    manifest = read_json_object(path, "export manifest")
    if "manifest_sha256" in manifest and manifest["manifest_sha256"] != _self_hash(manifest):
        raise ValueError(f"{path}: its content does not match its manifest_sha256 (corrupt or edited?)")
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {str(manifest.get('format'))[:40]!r}, this version reads {FORMAT!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ValueError(f"{path}: no 'files' list (written by another version?)")
    for name, rec in files.items():
        f = export_dir / Path(str(name)).name
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing (listed in {MANIFEST_NAME})")
        if not isinstance(rec, dict) or _sha256(f) != rec.get("sha256"):
            raise ValueError(f"{f}: sha256 differs from {MANIFEST_NAME} (truncated or corrupt file)")
    return manifest


def _self_hash(manifest: Mapping[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON without its own hash."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_export_inputs(info: Mapping[str, Any], words: Sequence[str]) -> None:
    """Raise if the word list is empty or ``info`` lacks a manifest key."""
    if not words:
        raise ValueError(
            "export needs the dictionary's word list (words=...), e.g. keyboard_fl.dictionary.run_word_list(run_dir)"
        )
    missing = [k for k in _INFO_KEYS if k not in info]
    if missing:
        raise ValueError(f"export info lacks {', '.join(missing)} (give keyboard_fl.runs.model_info(...))")


def _write_models(proto, out: Path, quantize: bool) -> list[str]:
    """Save the float model and, if ``quantize``, its dynamic-int8 twin; returns the file names written."""
    import onnx

    onnx.save(proto, str(out / FLOAT_NAME))
    files = [FLOAT_NAME]
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # quantize_dynamic warns about optional pre-processing through the root logger
        try:
            quantize_dynamic(str(out / FLOAT_NAME), str(out / INT8_NAME), weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        files.append(INT8_NAME)
    elif (out / INT8_NAME).exists():
        (out / INT8_NAME).unlink()  # never leave a stale int8 model beside a new float one
    return files


def _write_tokenizer_and_words(tokenizer, words: Sequence[str], out: Path) -> list[str]:
    """Save the tokenizer, plus its JSON form and the dictionary for the in-page keyboard; returns the file names."""
    tokenizer.save(out / TOKENIZER_NAME)
    # For the in-page keyboard: the tokenizer as JSON and the dictionary (real words only).
    from keyboard_fl.dictionary import WORDS_NAME, save_words
    from keyboard_fl.export.web import TOKENIZER_JSON_NAME, write_tokenizer_json

    write_tokenizer_json(tokenizer, out / TOKENIZER_JSON_NAME)
    save_words(out / WORDS_NAME, words)
    return [TOKENIZER_NAME, TOKENIZER_JSON_NAME, WORDS_NAME]


def _manifest(
    w: dict[str, np.ndarray],
    info: Mapping[str, Any],
    search: SearchConfig,
    quantize: bool,
    out: Path,
    files: Sequence[str],
) -> dict:
    """The manifest: shapes, I/O signature, search, privacy and quality facts, and each file's size and sha256."""
    from keyboard_fl.tokenizer import BOS_ID

    model_cfg = dict(info.get("model_config") or {})
    model_cfg["vocab_size"] = int(w["embedding"].shape[0])
    return {
        "format": FORMAT,
        "run": info["name"],
        "mode": info["mode"],
        "vocab_size": int(w["embedding"].shape[0]),
        "embed_dim": int(w["embedding"].shape[1]),
        "hidden_dim": int(w["w_projection"].shape[0]),
        "model_config": model_cfg,
        "opset": OPSET,
        "inputs": {
            "token": ["int32", ["batch"]],
            "c": ["float32", ["batch", "hidden_dim"]],
            "h": ["float32", ["batch", "embed_dim"]],
        },
        "outputs": {
            "logits": ["float32", ["batch", "vocab_size"]],
            "c_out": ["float32", ["batch", "hidden_dim"]],
            "h_out": ["float32", ["batch", "embed_dim"]],
        },
        "bos_id": BOS_ID,
        "search": dataclasses.asdict(search),
        "privacy": {k: info[k] for k in ("private", "epsilon", "delta", "privacy")}
        | dict(info.get("accounting") or {}),
        "quality": {k: info[k] for k in ("top1", "top3", "ksr")},
        "params": info["params"],
        "quantized": bool(quantize),
        "files": {f: {"bytes": (out / f).stat().st_size, "sha256": _sha256(out / f)} for f in files},
    }


def export_run(
    graphdef,
    params,
    tokenizer,
    info: Mapping[str, Any],
    out_dir,
    *,
    words: Sequence[str],
    search: SearchConfig = SearchConfig(),
    quantize: bool = True,
) -> dict:
    """Export one model to ``out_dir``; returns the manifest (also written as ``manifest.json``).

    Args:
      graphdef, params: the trained CIFG-LSTM (``nnx.split``).
      tokenizer: its :class:`~keyboard_fl.tokenizer.Tokenizer` (saved beside the model).
      info: public facts for the manifest, as :func:`keyboard_fl.runs.model_info` gives them
        (name, mode, private, epsilon, delta, privacy, top1, top3, ksr, params), plus
        optional ``model_config`` (dict) and ``accounting`` (accountant, neighbouring,
        noise_multiplier, clip_norm).
      words: the dictionary of real words the strip may show (``words.txt``; the run's public word list).
      search: the suggestion search the on-device runner should use.
    """
    from keyboard_fl.models import merge

    _check_export_inputs(info, words)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w = cifg_weights(merge(graphdef, params))
    files = _write_models(build_step_graph(w), out, quantize)
    files += _write_tokenizer_and_words(tokenizer, words, out)
    manifest = _manifest(w, info, search, quantize, out, files)
    manifest["manifest_sha256"] = _self_hash(manifest)  # a flipped figure (ε, a file's hash) is detected
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


__all__ = ["ACCOUNTING_KEYS", "FORMAT", "build_step_graph", "cifg_weights", "export_run", "read_manifest"]
