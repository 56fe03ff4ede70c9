"""This machine's measured matrix-multiply rate: the ceiling a model's GFLOP/s is compared with (torch-free).

``lvg bench`` divides a model's achieved GFLOP/s by the rate of one dense matmul of a transformer's shape
(1024 tokens x 768 -> 3072, lvg-b's FFN) at the same precision, run by the same kind of engine:

- ``fp32``: numpy's BLAS (what ONNX Runtime's MLAS GEMMs are compared with);
- ``bf16``: OpenVINO compiling one MatMul at bf16 inference precision (``None`` without OpenVINO);
- ``int8``: OpenVINO compiling the same MatMul with both operands fake-quantised (uint8 activations, int8
  weights), the pattern an int8 file's QDQ pairs become, so it runs on the int8 kernels (VNNI, AMX-INT8).

The best of a few timed calls after a warm-up is the rate: a ceiling, not an average, so other load on the
machine lowers it less than it lowers a long model run. One multiply-add counts 2 FLOPs, as the model's
GFLOPs do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lvg.runtime.backends.ort_backend import physical_cores

__all__ = ["SHAPE", "MatmulRate", "best_seconds", "matmul_rate"]

#: (M, K, N) of the probe: 1024 tokens through lvg-b's FFN (768 -> 3072).
SHAPE = (1024, 768, 3072)


@dataclass(frozen=True)
class MatmulRate:
    """``gflops_per_s`` of ``shape`` at ``precision`` on ``engine`` with ``threads`` threads."""

    precision: str
    engine: str
    gflops_per_s: float
    shape: tuple[int, int, int]
    threads: int

    def to_dict(self) -> dict[str, object]:
        return {"precision": self.precision, "engine": self.engine, "gflops_per_s": round(self.gflops_per_s, 1),
                "shape": list(self.shape), "threads": self.threads}


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``fn`` after one untimed call."""
    fn()  # warm-up: first-call allocation, code paths
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _openvino_matmul(m: int, k: int, n: int, precision: str, threads: int):
    """A compiled one-MatMul OpenVINO model and its input, or ``None`` without OpenVINO."""
    try:
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    param = ops.parameter([m, k], ov.Type.f32, name="a")
    a, w = param, ops.constant(rng.standard_normal((k, n)).astype(np.float32) * 0.02)
    x = np.abs(rng.standard_normal((m, k))).astype(np.float32)
    if precision == "int8":
        def fake_quantize(node, lo: float, hi: float, levels: int):
            lo_c, hi_c = ops.constant(np.float32(lo)), ops.constant(np.float32(hi))
            return ops.fake_quantize(node, lo_c, hi_c, lo_c, hi_c, levels)

        # uint8 activations over the input's range, int8 weights (255 symmetric levels), as an int8 file has
        a, w = fake_quantize(a, 0.0, float(x.max()), 256), fake_quantize(w, -0.1, 0.1, 255)
    model = ov.Model([ops.matmul(a, w, False, False)], [param], "matmul_probe")
    from lvg.runtime.backends.openvino_backend import compile_config

    compiled = ov.Core().compile_model(model, "CPU", compile_config(precision, threads=threads))
    request = compiled.create_infer_request()
    return lambda: request.infer({0: x})


def matmul_rate(precision: str = "fp32", *, threads: int = 0, repeats: int = 5,
                shape: tuple[int, int, int] = SHAPE) -> MatmulRate | None:
    """The measured rate at ``precision`` (``"fp32"``, ``"bf16"`` or ``"int8"``), or ``None`` where no engine
    here runs it."""
    m, k, n = shape
    threads = threads or physical_cores()
    if precision == "fp32":
        rng = np.random.default_rng(0)
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        out = np.empty((m, n), dtype=np.float32)
        fn, engine = (lambda: np.matmul(a, b, out=out)), "numpy"
    elif precision in ("bf16", "int8"):
        fn, engine = _openvino_matmul(m, k, n, precision, threads), "openvino"
        if fn is None:
            return None
    else:
        return None
    seconds = best_seconds(fn, repeats)
    return MatmulRate(precision, engine, 2.0 * m * k * n / seconds / 1e9, shape, threads)
