"""OpenVINO backend for ``.onnx`` artifacts on the CPU: the same file ONNX Runtime runs, at bf16 or fp32, and
int8 files (``lvg export --int8``).

OpenVINO (the ``openvino`` extra) reads the exported ``.onnx`` directly; the precision is a compile option
(``INFERENCE_PRECISION_HINT``), so one file serves every precision. In bf16 the matrix products run on the
CPU's bf16 instructions (AVX512-BF16 or AMX) while OpenVINO's LayerNorm, softmax and reduction kernels
accumulate in fp32. An int8 file's quantise / dequantise pairs become int8 kernels (VNNI, AMX-INT8); the
parts it keeps in floating point run at bf16 on a CPU with bf16 instructions (faster, and the held-out
metrics of the bundled model equal fp32's to 0.0005 either way), else at fp32. Compiled models are cached in
``$LVG_HOME/openvino`` (default ``~/.cache/lvg/openvino``), keyed by OpenVINO on the file and the options,
so a second load of the same model skips compilation; processes sharing the cache compile one at a time.

Thread safety: one compiled model; each concurrent ``run`` takes its own infer request from a small pool
(an infer request is not safe to share), so requests from several threads run side by side.
"""

from __future__ import annotations

import os
import threading
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from lvg.core.artifact import OUTPUT_NO_TARGET, OUTPUT_PROB
from lvg.core.atomic import file_lock
from lvg.core.home import cache_home
from lvg.core.model_file import ModelFile
from lvg.core.outputs import ModelOutput
from lvg.core.precision import CpuFeatures
from lvg.errors import ArtifactError, InputError, first_line, require
from lvg.runtime.backends.base import Backend
from lvg.runtime.backends.ort_backend import physical_cores

__all__ = ["OV_PRECISIONS", "OpenVINOBackend", "cache_dir", "compile_config"]

#: Our precision names -> OpenVINO's inference precision (int8: that of the file's floating-point parts).
OV_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "int8": "bf16"}


def cache_dir() -> Path:
    """Where compiled models are cached: ``$LVG_HOME/openvino`` (default ``~/.cache/lvg/openvino``)."""
    return cache_home() / "openvino"


def compile_config(precision: str, *, threads: int = 0, bf16_cpu: bool | None = None) -> dict[str, object]:
    """The CPU plugin's options: inference precision, latency mode (one stream: every core works on one
    request, as ONNX Runtime's intra-op pool does), threads = ``threads`` or one per physical core.
    ``bf16_cpu``: whether the CPU has bf16 instructions (default: read its flags), for an int8 file's rest."""
    if precision not in OV_PRECISIONS:
        raise InputError(f"OpenVINO runs fp32, bf16 or int8, not {precision!r}")
    hint = OV_PRECISIONS[precision]
    if precision == "int8" and not (CpuFeatures.read().bf16 if bf16_cpu is None else bf16_cpu):
        hint = "f32"
    return {
        "INFERENCE_PRECISION_HINT": hint,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_NUM_THREADS": int(threads) if threads else physical_cores(),
    }


def _dims(port) -> tuple[object, ...]:
    """A port's shape with static dims as ints and dynamic ones as ``None``."""
    return tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())


class OpenVINOBackend(Backend):
    """Runs an exported ``.onnx`` file with OpenVINO on the CPU. ``precision``: ``"bf16"`` or ``"fp32"``, and
    ``"int8"`` for an int8 file (which runs at nothing else);
    ``threads``: inference threads (0 = one per physical core); ``cache``: compile-cache folder (``None`` =
    :func:`cache_dir`, ``False`` = no cache); ``bf16_cpu``: whether the CPU has bf16 instructions (``None``:
    read its flags), which sets an int8 file's floating-point precision."""

    name = "openvino"

    def __init__(self, path: str | os.PathLike[str] | ModelFile, *, precision: str = "bf16", threads: int = 0,
                 cache: str | os.PathLike[str] | bool | None = None, bf16_cpu: bool | None = None) -> None:
        super().__init__(ModelFile.open(path))
        if self.model_file.kind != "onnx":
            raise InputError(f"the openvino backend runs .onnx files, not {self.model_file.path.name}")
        own = self.model_file.info.precision
        if (precision == "int8") != (own == "int8"):
            raise InputError(f"{self.model_file.path.name} is {own}; it cannot run at {precision}")
        ov = require("openvino", extra="openvino", purpose=f"{precision} inference of .onnx models with OpenVINO")
        config = compile_config(precision, threads=threads, bf16_cpu=bf16_cpu)
        p = self.info.path
        core = ov.Core()
        folder = _usable_cache(cache)
        if folder is not None:
            core.set_property({"CACHE_DIR": str(folder)})
        # OpenVINO writes a cache blob in place, and a process that loads it maps it: two processes compiling
        # the same new model at once (two camera nodes after a model update) can map a blob the other is
        # still writing and die of SIGBUS. One compile at a time per cache folder; the second then loads the
        # first's finished blob.
        lock = file_lock(folder / ".compile.lock", waiting=f"another process compiling into {folder}") \
            if folder is not None else nullcontext()
        try:
            with lock:
                self._compiled = core.compile_model(str(p), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError with multi-line messages
            raise ArtifactError(f"{p} cannot be compiled by OpenVINO ({first_line(exc)})") from None
        inputs = {port.get_any_name(): _dims(port) for port in self._compiled.inputs}
        names = {name for port in self._compiled.outputs for name in port.get_names()}
        self.check_io(p, inputs, names)
        self._outputs = [OUTPUT_PROB] + ([OUTPUT_NO_TARGET] if OUTPUT_NO_TARGET in names else [])
        self._precision = precision
        self._idle: list[object] = []
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        return "openvino:CPU"

    @property
    def precision(self) -> str:
        return self._precision

    def _request(self):
        with self._lock:
            return self._idle.pop() if self._idle else self._compiled.create_infer_request()

    def run(
        self, image: np.ndarray, text_ids: np.ndarray, text_mask: np.ndarray, *, return_attention: bool = False,
        return_expressions: bool = False,
    ) -> ModelOutput:
        feeds = self.feeds(image, text_ids, text_mask, return_attention=return_attention)
        request = self._request()
        try:
            request.infer(feeds)
            # Copies: the request's output buffers are reused by its next inference.
            out = [np.array(request.get_tensor(name).data, dtype=np.float32) for name in self._outputs]
        finally:
            with self._lock:
                self._idle.append(request)
        return ModelOutput(prob=out[0], no_target_logit=out[1] if len(out) > 1 else None)

    def close(self) -> None:
        with self._lock:
            self._idle.clear()
        self._compiled = None


def _usable_cache(cache: str | os.PathLike[str] | bool | None) -> Path | None:
    """The compile-cache folder if it can be created (a read-only home only loses the cache)."""
    if cache is False:
        return None
    folder = cache_dir() if cache in (None, True) else Path(cache)  # type: ignore[arg-type]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None
