"""On-device export: per-step ONNX models (float32 and int8) and an onnxruntime-only suggester.

``export_run`` (graph, params, tokenizer, info → files) lives in
:mod:`keyboard_fl.export.onnx_export` (builds the graph with ``onnx.helper``; a run
directory is exported by :func:`keyboard_fl.loading.export_onnx`); ``OnnxSuggester`` in
:mod:`keyboard_fl.export.runner` (numpy + onnxruntime only). Imports are lazy so that
importing the package pulls in neither JAX nor onnxruntime.
"""

from __future__ import annotations

__all__ = ["export_run", "OnnxSuggester"]


def __getattr__(name):
    if name == "export_run":
        from keyboard_fl.export.onnx_export import export_run

        return export_run
    if name == "OnnxSuggester":
        from keyboard_fl.export.runner import OnnxSuggester

        return OnnxSuggester
    raise AttributeError(name)
