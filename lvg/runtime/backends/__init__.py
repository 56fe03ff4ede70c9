"""Inference backends behind one contract (:class:`~lvg.runtime.backends.base.Backend`), chosen by file kind:

- ``.onnx`` -> ONNX Runtime (CPU; CUDA / TensorRT execution providers when installed);
- ``.engine`` / ``.plan`` -> TensorRT (the ``trt`` extra);
- ``.safetensors`` -> PyTorch (the ``torch`` extra), loaded lazily; also returns attention and per-expression maps.

Importing this package imports neither torch nor tensorrt.
"""

from __future__ import annotations

import os

from lvg.core.model_file import ModelFile
from lvg.errors import InputError
from lvg.runtime.backends.base import Backend

__all__ = ["BACKENDS", "Backend", "open_backend"]

#: Backend names accepted by :func:`open_backend` and the file kind each one runs.
BACKENDS = {"onnxruntime": "onnx", "tensorrt": "tensorrt", "torch": "torch"}


def open_backend(path: str | os.PathLike[str] | ModelFile, *, backend: str = "auto", device: str = "auto") -> Backend:
    """Load a model file with the backend that fits its kind (``backend="auto"``) or the named one.

    Raises:
        ArtifactError: unknown suffix, a pickle, or a file that is not a Latent-VG model.
        InputError: a backend name that does not fit the file type, or a backend / device that is no string.
        MissingDependencyError: the backend's optional dependency is missing (names the extra).
    """
    for name, value in (("backend", backend), ("device", device)):
        if not isinstance(value, str):
            raise InputError(f"{name} must be a string such as 'auto', got {type(value).__name__}")
    model_file = ModelFile.open(path)
    kind = model_file.kind
    if backend != "auto":
        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}; choose auto, {', '.join(BACKENDS)}")
        if BACKENDS[backend] != kind:
            raise InputError(f"backend {backend!r} cannot run a {kind} file ({model_file.path})")
    if kind == "onnx":
        from lvg.runtime.backends.ort_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model_file, device=device)
    if kind == "tensorrt":
        from lvg.runtime.backends.trt_backend import TensorRTBackend

        return TensorRTBackend(model_file, device=device)
    from lvg.runtime.backends.torch_backend import TorchBackend

    return TorchBackend(model_file, device=device)
