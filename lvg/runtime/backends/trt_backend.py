"""TensorRT backend for ``.engine`` / ``.plan`` files built by ``lvg export --format trt``.

Import-guarded: ``tensorrt`` is the ``trt`` extra. Device memory is managed through the CUDA runtime
library (``libcudart``) via ctypes, so no PyTorch, pycuda or cuda-python is needed. Engines have static
shapes (the batch is fixed at build time, stored in the ``<engine>.json`` sidecar); the execution context
and its device buffers are created once and shared, so :meth:`TensorRTBackend.run` holds a lock.

Uses the TensorRT 10 / 11 tensor API (``num_io_tensors``, ``set_tensor_address``, ``execute_async_v3``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import site
import sys
import threading

import numpy as np

from lvg.core.artifact import OUTPUT_NO_TARGET, OUTPUT_PROB
from lvg.core.model_file import ModelFile
from lvg.core.outputs import ModelOutput
from lvg.errors import ArtifactError, InputError, LVGError, require
from lvg.runtime.backends.base import Backend

__all__ = ["CudaRuntime", "TensorRTBackend"]

_H2D, _D2H = 1, 2  # cudaMemcpyKind


class CudaRuntime:
    """The handful of CUDA runtime calls the engine needs (malloc, async copies, a stream), via ctypes."""

    def __init__(self) -> None:
        self._lib = self._load()
        self._lib.cudaGetErrorString.restype = ctypes.c_char_p

    @staticmethod
    def _candidates() -> list[str]:
        names = []
        found = ctypes.util.find_library("cudart")
        if found:
            names.append(found)
        names += ["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "cudart64_12.dll"]
        # pip's nvidia-cuda-runtime wheels (pulled in by GPU builds of torch / onnxruntime / tensorrt).
        roots = [*site.getsitepackages(), site.getusersitepackages(), *sys.path]
        for root in roots:
            names += sorted(glob.glob(os.path.join(str(root), "nvidia", "cuda_runtime", "lib", "libcudart.so*")))
        return names

    def _load(self) -> ctypes.CDLL:
        for name in self._candidates():
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
        raise LVGError("TensorRT engines need the CUDA runtime library (libcudart), which was not found")

    def check(self, code: int, what: str) -> None:
        if code != 0:
            msg = self._lib.cudaGetErrorString(code).decode(errors="replace")
            raise LVGError(f"CUDA error in {what}: {msg} ({code})")

    def set_device(self, index: int) -> None:
        self.check(self._lib.cudaSetDevice(ctypes.c_int(index)), "cudaSetDevice")

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self.check(self._lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(max(nbytes, 1))), "cudaMalloc")
        return int(ptr.value or 0)

    def free(self, ptr: int) -> None:
        self._lib.cudaFree(ctypes.c_void_p(ptr))

    def stream(self) -> int:
        s = ctypes.c_void_p()
        self.check(self._lib.cudaStreamCreate(ctypes.byref(s)), "cudaStreamCreate")
        return int(s.value or 0)

    def destroy_stream(self, stream: int) -> None:
        self._lib.cudaStreamDestroy(ctypes.c_void_p(stream))

    def to_device(self, dst: int, src: np.ndarray, stream: int) -> None:
        src = np.ascontiguousarray(src)
        self.check(
            self._lib.cudaMemcpyAsync(
                ctypes.c_void_p(dst), ctypes.c_void_p(src.ctypes.data), ctypes.c_size_t(src.nbytes),
                ctypes.c_int(_H2D), ctypes.c_void_p(stream),
            ),
            "cudaMemcpyAsync(H2D)",
        )

    def to_host(self, dst: np.ndarray, src: int, stream: int) -> None:
        self.check(
            self._lib.cudaMemcpyAsync(
                ctypes.c_void_p(dst.ctypes.data), ctypes.c_void_p(src), ctypes.c_size_t(dst.nbytes),
                ctypes.c_int(_D2H), ctypes.c_void_p(stream),
            ),
            "cudaMemcpyAsync(D2H)",
        )

    def sync(self, stream: int) -> None:
        self.check(self._lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")


class TensorRTBackend(Backend):
    """Runs a serialized TensorRT engine. ``device``: ``"auto"``, ``"cuda"`` or ``"cuda:N"``."""

    name = "tensorrt"

    def __init__(self, path: str | os.PathLike[str] | ModelFile, *, device: str = "auto") -> None:
        super().__init__(ModelFile.open(path))
        p = self.info.path
        kind, _, index = device.partition(":")
        if kind not in ("auto", "cuda") or (index and not index.isdigit()):
            raise InputError(f"TensorRT engines run on a GPU: device must be auto, cuda or cuda:N, got {device!r}")
        trt = require("tensorrt", extra="trt", purpose="running TensorRT engines")
        self._trt = trt
        self._index = int(index or 0)
        self._cuda = CudaRuntime()
        self._cuda.set_device(self._index)
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(p.read_bytes())
        if engine is None:
            raise ArtifactError(
                f"{p}: TensorRT could not deserialize the engine (built by another TensorRT version or GPU?)"
            )
        self._engine = engine
        self._context = engine.create_execution_context()
        self._stream = self._cuda.stream()
        self._lock = threading.Lock()
        self._buffers: dict[str, tuple[int, tuple[int, ...], np.dtype]] = {}
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        shapes = {name: tuple(int(d) for d in engine.get_tensor_shape(name)) for name in names}
        is_input = {name: engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT for name in names}
        self.check_io(p, {n: shapes[n] for n in names if is_input[n]}, {n for n in names if not is_input[n]})
        for name in names:
            shape = shapes[name]
            if any(d < 0 for d in shape):
                raise ArtifactError(f"{p}: tensor {name} has a dynamic shape {shape}; lvg engines are static")
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            ptr = self._cuda.malloc(int(np.prod(shape)) * dtype.itemsize)
            self._buffers[name] = (ptr, shape, dtype)
            self._context.set_tensor_address(name, ptr)
        self._batch = self._buffers["image"][1][0]
        self._has_nt = OUTPUT_NO_TARGET in self._buffers

    @property
    def device(self) -> str:
        return f"tensorrt:cuda:{self._index}"

    @property
    def on_cpu(self) -> bool:
        return False

    @property
    def max_batch(self) -> int:
        return self._batch

    @property
    def fixed_batch(self) -> bool:
        return True

    def run(
        self, image: np.ndarray, text_ids: np.ndarray, text_mask: np.ndarray, *, return_attention: bool = False,
        return_expressions: bool = False,
    ) -> ModelOutput:
        feeds = self.feeds(image, text_ids, text_mask, return_attention=return_attention)
        with self._lock:
            for name, arr in feeds.items():
                ptr, shape, dtype = self._buffers[name]
                self._cuda.to_device(ptr, np.ascontiguousarray(arr, dtype=dtype), self._stream)
            if not self._context.execute_async_v3(self._stream):
                raise LVGError("TensorRT execution failed")
            outs = {}
            for name in (OUTPUT_PROB, OUTPUT_NO_TARGET) if self._has_nt else (OUTPUT_PROB,):
                ptr, shape, dtype = self._buffers[name]
                host = np.empty(shape, dtype=dtype)
                self._cuda.to_host(host, ptr, self._stream)
                outs[name] = host
            self._cuda.sync(self._stream)
        nt = outs[OUTPUT_NO_TARGET].astype(np.float32) if self._has_nt else None
        return ModelOutput(prob=outs[OUTPUT_PROB].astype(np.float32), no_target_logit=nt)

    def close(self) -> None:
        for ptr, _, _ in self._buffers.values():
            self._cuda.free(ptr)
        self._buffers.clear()
        if self._stream:
            self._cuda.destroy_stream(self._stream)
            self._stream = 0

    def __del__(self) -> None:  # pragma: no cover - depends on GC timing
        try:
            self.close()
        except Exception:
            pass
