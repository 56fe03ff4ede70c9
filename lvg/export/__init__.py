"""Export: ONNX (fp32 / fp16) with artifact metadata, and TensorRT engines built from it.

Importing this package is torch-free; the functions below are loaded on first use
(``from lvg.export import export_onnx`` imports torch at that moment; ``annotate``, which records a model's
training domain in an existing artifact, needs only ``onnx``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["annotate", "build_engine", "check_onnx", "convert_to_fp16", "export_onnx"]

_LAZY = {
    "annotate": "lvg.export.annotate",
    "export_onnx": "lvg.export.onnx_export",
    "check_onnx": "lvg.export.onnx_export",
    "convert_to_fp16": "lvg.export.fp16",
    "build_engine": "lvg.export.trt",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lvg.export' has no attribute {name!r}")
