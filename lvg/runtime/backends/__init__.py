"""Inference backends behind one contract (:class:`~lvg.runtime.backends.base.Backend`), chosen by file kind:

- ``.onnx`` -> ONNX Runtime (CPU; CUDA / TensorRT execution providers when installed), or OpenVINO (the
  ``openvino`` extra) for bf16 on CPUs with bf16 instructions (:mod:`lvg.core.precision` chooses);
- ``.engine`` / ``.plan`` -> TensorRT (the ``trt`` extra);
- ``.safetensors`` -> PyTorch (the ``torch`` extra), loaded lazily; also returns attention and per-expression maps.

The precision is chosen at load time (``precision="auto" | "fp32" | "bf16"``), never by the file.
Importing this package imports neither torch nor tensorrt nor openvino.
"""

from __future__ import annotations

import os

from lvg.core.model_file import ModelFile
from lvg.core.precision import CpuFeatures, PrecisionChoice, choose_precision
from lvg.errors import InputError
from lvg.runtime.backends.base import Backend

__all__ = ["BACKENDS", "Backend", "open_backend"]

#: Backend names accepted by :func:`open_backend` and the file kind each one runs.
BACKENDS = {"onnxruntime": "onnx", "openvino": "onnx", "tensorrt": "tensorrt", "torch": "torch"}


def open_backend(path: str | os.PathLike[str] | ModelFile, *, backend: str = "auto", device: str = "auto",
                 precision: str = "auto", features: CpuFeatures | None = None) -> Backend:
    """Load a model file with the backend that fits its kind and precision (``backend="auto"``) or the named one.

    Args:
        precision: ``"auto"`` (bf16 on a CPU with bf16 instructions when its engine is installed, else fp32;
            an int8 file's own int8), ``"fp32"``, ``"bf16"`` or ``"int8"``; see
            :func:`lvg.core.precision.choose_precision`.
        features: the CPU's flags (default: read from ``/proc/cpuinfo``).

    Raises:
        ArtifactError: unknown suffix, a pickle, or a file that is not a Latent-VG model.
        InputError: a backend name that does not fit the file type or the precision, a precision this CPU
            or file cannot run, or a backend / device / precision that is no string.
        MissingDependencyError: the backend's optional dependency is missing (names the extra).
    """
    for name, value in (("backend", backend), ("device", device), ("precision", precision)):
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
        choice = _onnx_choice(model_file, backend, device, precision, features)
        if choice.engine == "openvino":
            from lvg.runtime.backends.openvino_backend import OpenVINOBackend

            # The flags the choice was made from also decide an int8 file's floating-point precision.
            return OpenVINOBackend(model_file, precision=choice.precision,
                                   bf16_cpu=None if features is None else features.bf16)
        from lvg.runtime.backends.ort_backend import OnnxRuntimeBackend

        # An int8 file runs on the CPU whatever providers are installed (see _onnx_choice).
        ort_backend = OnnxRuntimeBackend(model_file, device="cpu" if choice.precision == "int8" else device)
        ort_backend.note = choice.note
        return ort_backend
    if kind == "tensorrt":
        choose_precision(precision, kind="tensorrt", file_precision=model_file.info.precision)
        from lvg.runtime.backends.trt_backend import TensorRTBackend

        return TensorRTBackend(model_file, device=device)
    from lvg.runtime.backends.torch_backend import TorchBackend

    return TorchBackend(model_file, device=device, precision=precision, features=features)


def _onnx_choice(model_file: ModelFile, backend: str, device: str, precision: str,
                 features: CpuFeatures | None) -> PrecisionChoice:
    """Engine and precision for an ``.onnx`` file: the named backend's, or the one the CPU runs fastest."""
    import onnxruntime as ort  # a core dependency (not an extra)

    kind = device.partition(":")[0]
    own = model_file.info.precision
    # An int8 file runs on the CPU: "auto" does not move it to a GPU that happens to be there.
    gpu = kind in ("cuda", "tensorrt") or (
        kind == "auto" and own != "int8" and "CUDAExecutionProvider" in ort.get_available_providers())
    if backend == "openvino" and kind not in ("auto", "cpu"):
        raise InputError(f"the openvino backend runs on the CPU, not on device {device!r}")
    if backend == "onnxruntime" and precision.lower() == "bf16":
        raise InputError("ONNX Runtime runs .onnx files at their own precision; bf16 needs backend 'openvino' "
                         "(or backend 'auto')")
    if backend == "openvino":
        # Asked for by name: OpenVINO runs the request on the CPU (fp32 where auto finds no bf16 instructions).
        choice = choose_precision(precision, kind="onnx", file_precision=own, features=features, openvino=True)
        return PrecisionChoice("openvino", choice.precision if choice.precision in ("bf16", "int8") else "fp32")
    choice = choose_precision(precision, kind="onnx", file_precision=own, gpu=gpu, features=features,
                              openvino=False if backend == "onnxruntime" else None)
    if backend == "onnxruntime":
        return PrecisionChoice("onnxruntime", choice.precision)  # auto: no note about another engine
    return choice
