"""Export: ONNX (fp32 / fp16 / int8) with artifact metadata, and TensorRT engines built from it.

Importing this package is torch-free; the functions below are loaded on first use
(``from lvg.export import export_onnx`` imports torch at that moment; ``annotate``, which records a model's
training domain in an existing artifact, and ``quantize_int8`` need only ``onnx`` and ONNX Runtime).
"""

from __future__ import annotations

from lvg._lazy import lazy_getattr

__all__ = ["annotate", "build_engine", "check_onnx", "convert_to_fp16", "export_onnx", "quantize_int8"]

#: The smallest share of mask pixels an export must agree on with what it was made from (ONNX against torch,
#: int8 against fp32).
MASK_AGREEMENT = 0.995

__getattr__ = lazy_getattr(__name__, {
    "annotate": "lvg.export.annotate",
    "export_onnx": "lvg.export.onnx_export",
    "check_onnx": "lvg.export.onnx_export",
    "convert_to_fp16": "lvg.export.fp16",
    "build_engine": "lvg.export.trt",
    "quantize_int8": "lvg.export.int8",
})
