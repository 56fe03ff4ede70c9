"""TensorRT engine build from an exported ONNX file (the ``trt`` extra).

- **TensorRT 10**: a weakly typed network from the fp32 ONNX; ``fp16=True`` sets the ``FP16`` builder
  flag and pins LayerNorm / softmax / reductions to fp32 (``OBEY_PRECISION_CONSTRAINTS``), mirroring
  :mod:`lvg.export.fp16`. An fp16 ONNX is also accepted (its casts are honoured).
- **TensorRT 11+**: networks are strongly typed (precision comes from the ONNX types), so an fp16 engine
  needs the fp16 ONNX (``lvg export --format trt --fp16`` converts the graph first).
- **Static shapes**: one optimisation profile with min = opt = max = ``(batch, ...)``; the batch is
  stored in the metadata. **Workspace**: ``workspace_gib`` caps the builder's scratch memory.
- **Metadata**: the ONNX file's ``lvg.*`` entries plus ``lvg.trt_batch`` / ``lvg.trt_version`` go to
  the JSON sidecar ``<engine>.json`` (a plan file must start with the engine for other tools to load it).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvg.core import artifact as art
from lvg.core.atomic import OutputSet
from lvg.core.model_file import ModelFile
from lvg.errors import InputError, LVGError, require

__all__ = ["EngineReport", "build_engine", "trt_major_version"]


def trt_major_version(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


@dataclass(frozen=True)
class EngineReport:
    path: Path
    sidecar: Path
    batch: int
    precision: str
    trt_version: str
    strongly_typed: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sidecar": str(self.sidecar),
            "batch": self.batch,
            "precision": self.precision,
            "trt_version": self.trt_version,
            "strongly_typed": self.strongly_typed,
            "seconds": round(self.seconds, 3),
        }


def build_engine(
    onnx_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    batch: int = 1,
    fp16: bool = False,
    workspace_gib: float = 4.0,
) -> EngineReport:
    """Build a static-shape engine for ``batch`` samples from a Latent-VG ``.onnx`` file.

    Raises:
        MissingDependencyError: tensorrt is not installed (``pip install 'latent-vg[trt]'``).
        InputError: TensorRT 11+ asked for fp16 from an fp32 ONNX (export with ``--fp16`` first).
        LVGError: the parser or the builder failed (their messages are included).
    """
    trt = require("tensorrt", extra="trt", purpose="building TensorRT engines")
    if batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    out = Path(out)
    info = ModelFile.open(onnx_path).info
    if info.kind != "onnx":
        raise InputError(f"TensorRT engines are built from an exported .onnx file, not {info.path}")
    onnx_path, meta, cfg = info.path, info.metadata, info.config
    major = trt_major_version(trt)
    strongly_typed = major >= 11
    if strongly_typed and fp16 and info.precision != "fp16":
        raise InputError(f"TensorRT {trt.__version__} is strongly typed: build fp16 engines from an fp16 ONNX")
    start = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise LVGError(f"TensorRT could not parse {onnx_path}: {errors[:500]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        sensitive = {trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX, trt.LayerType.REDUCE}
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type in sensitive:
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)
    s, length = cfg.encoder.img_size, cfg.preprocess.max_text_len
    shapes = {"image": (batch, 3, s, s), "text_ids": (batch, length), "text_mask": (batch, length)}
    profile = builder.create_optimization_profile()
    for name, shape in shapes.items():
        profile.set_shape(name, shape, shape, shape)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise LVGError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    precision = "fp16" if fp16 or info.precision == "fp16" else "fp32"
    side_meta = dict(meta)  # the ONNX file's own metadata, plus what the engine adds
    side_meta.update(
        {
            art.KEY_TRT_BATCH: str(batch),
            art.KEY_TRT_VERSION: str(trt.__version__),
            art.KEY_PRECISION: precision,
            art.KEY_SOURCE: f"{onnx_path.name}",
        }
    )
    sidecar = art.engine_sidecar(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with OutputSet() as outputs:  # the engine and its sidecar together, or neither
            outputs.stage(out).write_bytes(bytes(serialized))
            outputs.stage(sidecar).write_text(json.dumps(side_meta, indent=1, sort_keys=True), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    return EngineReport(
        path=out, sidecar=sidecar, batch=batch, precision=precision, trt_version=str(trt.__version__),
        strongly_typed=strongly_typed, seconds=time.perf_counter() - start,
    )
