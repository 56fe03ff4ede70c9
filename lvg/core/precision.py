"""Which numeric precision and which engine run a model on this machine (torch-free).

A floating-point model file decides nothing here: one fp32 ``.onnx`` serves fp32 and bf16, and the precision
is chosen when it is loaded (``Grounder.load(path, precision=...)``, ``--precision``):

- ``fp32``: ONNX Runtime for ``.onnx`` files (the one required runtime), the model's own dtype for torch.
- ``bf16``: OpenVINO (the ``openvino`` extra) reading the same ``.onnx`` with bf16 inference precision
  (LayerNorm, softmax and reductions accumulate in fp32 inside its kernels); for ``.safetensors`` the torch
  model with bf16 weights (the VCI threshold and the sigmoid stay fp32). Needs a CPU with bf16 instructions
  (``avx512_bf16`` or ``amx_bf16``); on CUDA only the torch backend takes it.
- ``auto``: bf16 where the CPU has bf16 instructions and the engine for it is installed, else fp32. On a bf16
  CPU without OpenVINO it stays on ONNX Runtime fp32 and :attr:`PrecisionChoice.note` says what to install.
  The environment variable ``LVG_PRECISION`` (``fp32`` / ``bf16``) replaces what ``auto`` means on a machine
  for floating-point files, e.g. ``LVG_PRECISION=fp32`` to keep every default load on ONNX Runtime fp32 (the
  test suite does).
- ``int8``: a file quantised by ``lvg export --int8 --calib DATA`` (:mod:`lvg.export.int8`): static int8
  needs activation ranges calibrated on the model's own domain, so it is a second file, not a load-time
  option. Such a file runs at int8 only, on the CPU: OpenVINO where installed, else ONNX Runtime, whose
  int8 kernels are slower (a note names the extra). ``auto`` on an int8 file means int8; fp32 or bf16 on it,
  or int8 on an fp32 file, are refused with the file to use instead.

The CPU's flags come from ``/proc/cpuinfo``; :func:`choose_precision` takes them as an argument, so the
choice is a pure function of (request, file kind, device, flags, installed engines).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lvg.errors import InputError, MissingDependencyError

__all__ = [
    "BF16_FLAGS",
    "ENV",
    "ENV_VALUES",
    "INT8_FLAGS",
    "OPENVINO_HINT",
    "PRECISIONS",
    "CpuFeatures",
    "PrecisionChoice",
    "choose_precision",
    "openvino_available",
]

#: Values of ``precision=`` / ``--precision``.
PRECISIONS = ("auto", "fp32", "bf16", "int8")

#: CPU flags (as ``/proc/cpuinfo`` spells them) that make bf16 matrix products faster than fp32.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
#: CPU flags with int8 dot products (VNNI, AMX-INT8).
INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})

#: What to install for bf16 on ``.onnx`` files.
OPENVINO_HINT = "pip install 'latent-vg[openvino]'"


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's instruction-set flags that matter for the choice of precision."""

    flags: frozenset[str]

    @classmethod
    def of(cls, flags: Iterable[str]) -> CpuFeatures:
        return cls(frozenset(f.strip().lower() for f in flags if f.strip()))

    @classmethod
    def read(cls, cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> CpuFeatures:
        """Flags of the first CPU in ``cpuinfo`` (Linux; x86 ``flags`` or ARM ``Features``); none elsewhere."""
        try:
            text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return cls(frozenset())
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() in ("flags", "Features"):
                return cls.of(value.split())
        return cls(frozenset())

    @property
    def bf16(self) -> bool:
        """bf16 dot-product instructions (AVX512-BF16 or AMX-BF16)."""
        return bool(self.flags & BF16_FLAGS)

    @property
    def int8(self) -> bool:
        """int8 dot-product instructions (VNNI or AMX-INT8)."""
        return bool(self.flags & INT8_FLAGS)

    @property
    def amx(self) -> bool:
        """AMX tile instructions (Sapphire Rapids and later Xeons)."""
        return any(f.startswith("amx_") for f in self.flags)

    def summary(self) -> str:
        """The relevant flags present, e.g. ``"avx512_bf16 avx512_vnni"`` (``"none"`` without any)."""
        found = sorted(self.flags & (BF16_FLAGS | INT8_FLAGS | {"amx_tile"}))
        return " ".join(found) or "none"


@dataclass(frozen=True)
class PrecisionChoice:
    """What runs a model: ``engine`` (``"onnxruntime"``, ``"openvino"``, ``"torch"``, ``"tensorrt"``),
    ``precision`` (``"fp32"``, ``"bf16"``, or the file's own, e.g. ``"fp16"``, ``"int8"``) and, when the
    choice left speed on the table, a ``note`` saying why (e.g. which extra to install)."""

    engine: str
    precision: str
    note: str | None = None


def openvino_available() -> bool:
    """Whether ``import openvino`` works in this process."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


#: Environment variable that says what ``auto`` means on this machine, and the values it takes.
ENV = "LVG_PRECISION"
ENV_VALUES = ("auto", "fp32", "bf16")


def _check_request(precision: object) -> str:
    value = precision.lower() if isinstance(precision, str) else precision
    if value not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
    if value == "auto" and os.environ.get(ENV, "").strip():
        env = os.environ[ENV].strip().lower()
        # int8 is a file, not something auto can mean for every model: the variable takes what auto may mean.
        if env not in ENV_VALUES:
            raise InputError(f"{ENV}={os.environ[ENV]!r} is not a precision auto can mean; choose "
                             f"{', '.join(ENV_VALUES)}")
        return env
    return value  # type: ignore[return-value]


def choose_precision(
    precision: str,
    *,
    kind: str,
    file_precision: str = "fp32",
    gpu: bool = False,
    features: CpuFeatures | None = None,
    openvino: bool | None = None,
) -> PrecisionChoice:
    """The engine and precision for a request.

    Args:
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"int8"`` (case-insensitive).
        kind: the model file's kind, ``"onnx"``, ``"torch"`` or ``"tensorrt"``.
        file_precision: what the file holds (``"fp32"``, ``"fp16"`` for a half-precision export, ``"int8"``
            for a quantised one).
        gpu: the model runs on a GPU (then the CPU's flags do not matter and auto means the file's own).
        features: the CPU's flags (default: read from ``/proc/cpuinfo``).
        openvino: whether OpenVINO is importable (default: try the import).

    Raises:
        InputError: an unknown precision, bf16 on a CPU without bf16 instructions, or a precision the
            file's engine cannot take (a TensorRT engine runs at the precision it was built with; bf16 on a
            GPU needs a ``.safetensors`` checkpoint; int8 needs an int8 file, which runs only at int8 and
            only on the CPU).
        MissingDependencyError: bf16 for an ``.onnx`` file without OpenVINO installed (names the extra).
    """
    want = _check_request(precision)
    if file_precision == "int8" and precision.lower() == "auto":
        want = "auto"  # LVG_PRECISION says what auto means for floating-point files; an int8 file's is int8
    if file_precision == "int8" or want == "int8":
        return _int8_choice(want, kind=kind, file_precision=file_precision, gpu=gpu, features=features,
                            openvino=openvino)
    if kind == "tensorrt":
        if want != "auto" and want != file_precision:
            raise InputError(f"a TensorRT engine runs at the precision it was built with ({file_precision}); "
                             f"precision {want!r} needs a new engine (lvg export --format trt)")
        return PrecisionChoice("tensorrt", file_precision)
    if gpu:
        if want == "bf16" and kind != "torch":
            raise InputError("bf16 on a GPU needs the torch backend (a .safetensors checkpoint); "
                             "for .onnx files on a GPU export fp16 (lvg export --fp16)")
        engine = "torch" if kind == "torch" else "onnxruntime"
        return PrecisionChoice(engine, "bf16" if want == "bf16" else file_precision)
    cpu = features if features is not None else CpuFeatures.read()
    if want == "bf16" and not cpu.bf16:
        raise InputError(f"precision 'bf16' needs a CPU with bf16 instructions ({' or '.join(sorted(BF16_FLAGS))}); "
                         f"this one has {cpu.summary()}: use fp32")
    fast = want == "bf16" or (want == "auto" and cpu.bf16 and file_precision == "fp32")
    if kind == "torch":
        return PrecisionChoice("torch", "bf16" if fast else file_precision)
    if not fast:
        return PrecisionChoice("onnxruntime", file_precision)
    has_openvino = openvino_available() if openvino is None else openvino
    if has_openvino:
        return PrecisionChoice("openvino", "bf16")
    if want == "bf16":
        raise MissingDependencyError("openvino", "openvino", "bf16 inference of .onnx models")
    return PrecisionChoice(
        "onnxruntime", file_precision,
        note=f"this CPU runs bf16 ({cpu.summary()}) about 2x faster than fp32 with OpenVINO: {OPENVINO_HINT}",
    )


def _int8_choice(want: str, *, kind: str, file_precision: str, gpu: bool, features: CpuFeatures | None,
                 openvino: bool | None) -> PrecisionChoice:
    """int8 requested or an int8 file: only the two go together, on the CPU."""
    if file_precision != "int8":
        raise InputError(f"int8 needs a quantised file: lvg export --ckpt MODEL --int8 --calib DATA (this "
                         f"{kind} file is {file_precision})")
    if want not in ("auto", "int8"):
        raise InputError(f"this file is quantised to int8 and runs only at int8; for {want} load the fp32 .onnx "
                         "it was made from")
    if gpu or kind != "onnx":
        raise InputError("an int8 .onnx file runs on the CPU (device 'cpu'); on a GPU use the fp32 or fp16 export")
    has_openvino = openvino_available() if openvino is None else openvino
    if has_openvino:
        return PrecisionChoice("openvino", "int8")
    cpu = features if features is not None else CpuFeatures.read()
    return PrecisionChoice("onnxruntime", "int8",
                           note=f"OpenVINO runs int8 files faster on this CPU ({cpu.summary()}): {OPENVINO_HINT}")
