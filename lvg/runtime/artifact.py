"""What travels inside (or beside) an exported model, and how the runtime reads it without torch.

Every Latent-VG artifact carries the same string -> string metadata (SPEC section 5):

==============================  ==============================================================
key                             value
==============================  ==============================================================
``lvg.format``                  ``"latent-vg"`` (marks the file as ours)
``lvg.format_version``          ``"1"``
``lvg.config``                  the full :class:`~lvg.config.ModelConfig` JSON
``lvg.preprocess``              its :class:`~lvg.config.PreprocessConfig` JSON (also inside config)
``lvg.tokenizer_identity``      ``"spm-sha256:<16 hex>"`` of the sentencepiece model
``lvg.tokenizer_spm``           the sentencepiece model bytes, base64: one file is self-contained
``lvg.inputs``                  JSON list of ``{"name", "dtype", "shape"}`` (``"B"`` = batch)
``lvg.outputs``                 JSON list of ``{"name", "dtype", "shape", "meaning"}``
``lvg.precision``               ``"fp32"`` or ``"fp16"`` (compute precision; IO is always fp32)
``lvg.gflops_per_sample``       GFLOPs of one sample (1 multiply-add = 2 FLOPs), from count_flops
``lvg.params``                  parameter count
``lvg.opset``                   ONNX opset of the graph
``lvg.exporter``                how the graph was produced (exporter, fp16 converter, simplifier)
``lvg.source``                  file name and sha256 prefix of the checkpoint it came from
``lvg.version``                 the ``latent-vg`` version that exported it
==============================  ==============================================================

Model inputs: ``image`` float32 (B, 3, S, S) normalised, ``text_ids`` int64 (B, L), ``text_mask`` bool
(B, L) (True on real tokens; bool because that is what the model consumes, so no conversion node is
needed). Outputs: ``prob`` float32 (B, S/4, S/4) in [0, 1] and, for GRES variants, ``no_target`` float32
(B,) holding the **logit** (not the probability): the threshold ``sigmoid(logit) > no_target_threshold``
is applied in numpy post-processing, so it stays configurable at run time.

Where the metadata lives: ONNX ``metadata_props``; TensorRT engines a JSON sidecar ``<engine>.json``
(a TensorRT plan must start with the engine bytes for other tools to open it); torch checkpoints the
safetensors header (``config`` plus the optional ``lvg.tokenizer_*`` entries), read here by parsing the
header directly so that no torch or safetensors import is needed.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from lvg.config import ModelConfig
from lvg.errors import ArtifactError, ConfigError

__all__ = [
    "ArtifactInfo",
    "FORMAT",
    "FORMAT_VERSION",
    "KEY_CONFIG",
    "KEY_TOKENIZER_IDENTITY",
    "KEY_TOKENIZER_SPM",
    "ONNX_SUFFIXES",
    "PICKLE_SUFFIXES",
    "TORCH_SUFFIXES",
    "TRT_SUFFIXES",
    "artifact_kind",
    "build_metadata",
    "check_model_file",
    "engine_sidecar",
    "info_from_metadata",
    "input_spec",
    "output_spec",
    "read_engine_metadata",
    "read_safetensors_metadata",
    "tokenizer_metadata",
    "tokenizer_sidecars",
]

FORMAT = "latent-vg"
FORMAT_VERSION = "1"

KEY_FORMAT = "lvg.format"
KEY_FORMAT_VERSION = "lvg.format_version"
KEY_CONFIG = "lvg.config"
KEY_PREPROCESS = "lvg.preprocess"
KEY_TOKENIZER_IDENTITY = "lvg.tokenizer_identity"
KEY_TOKENIZER_SPM = "lvg.tokenizer_spm"
KEY_INPUTS = "lvg.inputs"
KEY_OUTPUTS = "lvg.outputs"
KEY_PRECISION = "lvg.precision"
KEY_GFLOPS = "lvg.gflops_per_sample"
KEY_PARAMS = "lvg.params"
KEY_OPSET = "lvg.opset"
KEY_EXPORTER = "lvg.exporter"
KEY_SOURCE = "lvg.source"
KEY_VERSION = "lvg.version"
KEY_TRT_BATCH = "lvg.trt_batch"
KEY_TRT_VERSION = "lvg.trt_version"

ONNX_SUFFIXES = (".onnx",)
TRT_SUFFIXES = (".engine", ".plan")
TORCH_SUFFIXES = (".safetensors",)
#: Pickle-based weight files: refused by name, never opened (unpickling can execute arbitrary code).
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")

INPUT_NAMES = ("image", "text_ids", "text_mask")
OUTPUT_PROB = "prob"
OUTPUT_NO_TARGET = "no_target"

# Checkpoints (safetensors header) use the plain "config" key written by lvg.modeling.checkpoint.
CHECKPOINT_CONFIG_KEY = "config"
CHECKPOINT_FORMAT = "latent-vg-checkpoint"
CHECKPOINT_FORMAT_VERSION = "1"


def check_checkpoint_header(meta: Mapping[str, str], path: str | os.PathLike[str]) -> None:
    """Raise :class:`ArtifactError` unless ``meta`` (a safetensors header's metadata) is a Latent-VG
    checkpoint of the format version this lvg reads (a newer one may store what this code would misread)."""
    if meta.get("format") != CHECKPOINT_FORMAT or CHECKPOINT_CONFIG_KEY not in meta:
        raise ArtifactError(f"{path} is a safetensors file but not a Latent-VG checkpoint (no config in its header)")
    version = meta.get("format_version", "")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise ArtifactError(f"{path} has checkpoint format version {version!r}; this lvg reads "
                            f"{CHECKPOINT_FORMAT_VERSION!r} (a newer lvg wrote it?)")


def artifact_kind(path: str | os.PathLike[str]) -> str:
    """``"onnx"``, ``"tensorrt"`` or ``"torch"`` from the file suffix.

    Raises:
        ArtifactError: any other suffix.
    """
    if Path(path).is_dir():
        raise ArtifactError(f"model path is a directory, not a model file: {path}")
    suffix = Path(path).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise ArtifactError(
            f"{path}: unknown model file type {suffix!r}: {suffix} files are pickles, which can run code when "
            "loaded, so lvg never opens them; use a .safetensors checkpoint or an exported .onnx"
        )
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in TRT_SUFFIXES:
        return "tensorrt"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    known = ", ".join(ONNX_SUFFIXES + TRT_SUFFIXES + TORCH_SUFFIXES)
    raise ArtifactError(f"{path}: unknown model file type {suffix or '(no suffix)'!r}; expected one of {known}")


def check_model_file(path: str | os.PathLike[str]) -> Path:
    """Refuse a model path that cannot be a model file, with a message saying why.

    Raises:
        ArtifactError: the path does not exist, is a directory, is not a regular file (a FIFO or
            device would block or never end), is empty, or cannot be read.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ArtifactError(f"model not found: {p}") from None
    except OSError as exc:
        raise ArtifactError(f"cannot read model {p}: {exc.strerror or exc}") from None
    if p.is_dir():
        raise ArtifactError(f"model path is a directory, not a file: {p}")
    if not p.is_file():
        raise ArtifactError(f"model path is not a regular file: {p}")
    if st.st_size == 0:
        raise ArtifactError(f"model file is empty (0 bytes): {p}")
    if not os.access(p, os.R_OK):
        raise ArtifactError(f"permission denied reading model: {p}")
    return p


def input_spec(cfg: ModelConfig) -> list[dict[str, Any]]:
    """The model inputs, as stored under ``lvg.inputs``."""
    s, length = cfg.encoder.img_size, cfg.preprocess.max_text_len
    return [
        {"name": "image", "dtype": "float32", "shape": ["B", 3, s, s]},
        {"name": "text_ids", "dtype": "int64", "shape": ["B", length]},
        {"name": "text_mask", "dtype": "bool", "shape": ["B", length]},
    ]


def output_spec(cfg: ModelConfig) -> list[dict[str, Any]]:
    """The model outputs, as stored under ``lvg.outputs`` (``no_target`` only for GRES variants)."""
    p = cfg.prob_size
    out: list[dict[str, Any]] = [
        {"name": OUTPUT_PROB, "dtype": "float32", "shape": ["B", p, p], "meaning": "probability map in [0, 1] (Eq. 9)"}
    ]
    if cfg.head.gres:
        out.append(
            {"name": OUTPUT_NO_TARGET, "dtype": "float32", "shape": ["B"], "meaning": "no-target logit (GRES)"}
        )
    return out


def tokenizer_metadata(model_bytes: bytes, identity: str) -> dict[str, str]:
    """The two tokenizer entries (``lvg.tokenizer_spm`` base64, ``lvg.tokenizer_identity``).

    Pass them as ``save_checkpoint(..., metadata=tokenizer_metadata(tok.model_bytes, tok.identity))`` so a
    checkpoint carries its tokenizer like an exported artifact does.
    """
    return {KEY_TOKENIZER_SPM: base64.b64encode(model_bytes).decode("ascii"), KEY_TOKENIZER_IDENTITY: identity}


def build_metadata(
    cfg: ModelConfig,
    *,
    tokenizer_bytes: bytes,
    tokenizer_identity: str,
    precision: str,
    gflops_per_sample: float | None,
    params: int | None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The full ``lvg.*`` metadata dictionary of an artifact (all values strings)."""
    from lvg import __version__

    meta = {
        KEY_FORMAT: FORMAT,
        KEY_FORMAT_VERSION: FORMAT_VERSION,
        KEY_CONFIG: cfg.to_json(),
        KEY_PREPROCESS: json.dumps(cfg.to_dict()["preprocess"], sort_keys=True),
        KEY_TOKENIZER_IDENTITY: tokenizer_identity,
        KEY_TOKENIZER_SPM: base64.b64encode(tokenizer_bytes).decode("ascii"),
        KEY_INPUTS: json.dumps(input_spec(cfg)),
        KEY_OUTPUTS: json.dumps(output_spec(cfg)),
        KEY_PRECISION: precision,
        KEY_VERSION: __version__,
    }
    if gflops_per_sample is not None:
        meta[KEY_GFLOPS] = f"{gflops_per_sample:.6g}"
    if params is not None:
        meta[KEY_PARAMS] = str(int(params))
    meta.update(extra or {})
    return meta


@dataclass(frozen=True)
class ArtifactInfo:
    """What the runtime knows about a loaded model file.

    Attributes:
        path: the model file. kind: ``"onnx"`` | ``"tensorrt"`` | ``"torch"``.
        config: the model config (preprocessing included). precision: ``"fp32"`` | ``"fp16"``.
        tokenizer_bytes: the sentencepiece model, ``None`` when the artifact carries none.
        tokenizer_identity: its ``spm-sha256:..`` identity (``None`` likewise).
        gflops_per_sample: GFLOPs of one sample when recorded at export time.
        batch: the fixed batch size of a static-shape artifact (TensorRT engines), ``None`` = dynamic.
        metadata: every raw metadata entry.
    """

    path: Path
    kind: str
    config: ModelConfig
    precision: str = "fp32"
    tokenizer_bytes: bytes | None = None
    tokenizer_identity: str | None = None
    gflops_per_sample: float | None = None
    batch: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def gres(self) -> bool:
        """Whether the model has the GRES no-target head."""
        return self.config.head.gres

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description (no tokenizer bytes)."""
        return {
            "path": str(self.path),
            "kind": self.kind,
            "variant": self.config.name,
            "precision": self.precision,
            "gres": self.gres,
            "input_size": self.config.encoder.img_size,
            "max_text_len": self.config.preprocess.max_text_len,
            "tokenizer": self.tokenizer_identity,
            "gflops_per_sample": self.gflops_per_sample,
            "batch": self.batch,
        }


def _decode_tokenizer(meta: Mapping[str, str], where: str) -> tuple[bytes | None, str | None]:
    text = meta.get(KEY_TOKENIZER_SPM)
    identity = meta.get(KEY_TOKENIZER_IDENTITY)
    if text is None:
        return None, identity
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ArtifactError(f"{where}: the embedded tokenizer ({KEY_TOKENIZER_SPM}) is not valid base64") from None
    return data, identity


def info_from_metadata(path: Path, kind: str, meta: Mapping[str, str]) -> ArtifactInfo:
    """Parse ``lvg.*`` metadata (ONNX properties or an engine sidecar) into an :class:`ArtifactInfo`.

    Raises:
        ArtifactError: the metadata is not a Latent-VG artifact's, of a newer format, or corrupt.
    """
    if meta.get(KEY_FORMAT) != FORMAT or KEY_CONFIG not in meta:
        raise ArtifactError(f"{path} is not a Latent-VG model (no {KEY_CONFIG} in its metadata); export it with lvg export")
    version = meta.get(KEY_FORMAT_VERSION, "")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{path} has artifact format version {version!r}; this lvg reads {FORMAT_VERSION!r}")
    try:
        cfg = ModelConfig.from_json(meta[KEY_CONFIG])
    except ConfigError as exc:
        raise ArtifactError(f"{path}: stored config is invalid: {exc}") from None
    tok, identity = _decode_tokenizer(meta, str(path))
    gflops = None
    if KEY_GFLOPS in meta:
        try:
            gflops = float(meta[KEY_GFLOPS])
        except ValueError:
            raise ArtifactError(f"{path}: {KEY_GFLOPS} is not a number: {meta[KEY_GFLOPS]!r}") from None
    batch = None
    if KEY_TRT_BATCH in meta:
        try:
            batch = int(meta[KEY_TRT_BATCH])
        except ValueError:
            raise ArtifactError(f"{path}: {KEY_TRT_BATCH} is not an integer: {meta[KEY_TRT_BATCH]!r}") from None
    precision = meta.get(KEY_PRECISION, "fp32")
    return ArtifactInfo(
        path=path,
        kind=kind,
        config=cfg,
        precision=precision,
        tokenizer_bytes=tok,
        tokenizer_identity=identity,
        gflops_per_sample=gflops,
        batch=batch,
        metadata=dict(meta),
    )


def engine_sidecar(engine_path: str | os.PathLike[str]) -> Path:
    """Where a TensorRT engine's metadata lives: ``<engine>.json`` (e.g. ``model.engine.json``)."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def read_engine_metadata(engine_path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata sidecar of a TensorRT engine.

    Raises:
        ArtifactError: the sidecar is missing or not a JSON object of strings.
    """
    side = engine_sidecar(engine_path)
    if not side.is_file():
        raise ArtifactError(f"{engine_path}: metadata sidecar {side.name} not found (build engines with lvg export --format trt)")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{side}: unreadable engine metadata ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ArtifactError(f"{side}: engine metadata must be a JSON object of strings")
    return data


# A safetensors header is at most this large (the format's own reader refuses more).
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, parsed directly (no torch, no safetensors package).

    Format: 8-byte little-endian header length, then that many bytes of JSON whose ``__metadata__``
    entry is a string -> string map.

    Raises:
        ArtifactError: missing file, or not a safetensors file.
    """
    p = Path(path)
    if p.is_dir():
        raise ArtifactError(f"checkpoint path is a directory, not a file: {p}")
    if not p.is_file():
        raise ArtifactError(f"checkpoint not found: {p}")
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                raise ArtifactError(f"{p} is not a safetensors checkpoint (file too short)")
            (n,) = struct.unpack("<Q", head)
            if n <= 0 or n > _MAX_SAFETENSORS_HEADER:
                raise ArtifactError(f"{p} is not a safetensors checkpoint (bad header length)")
            raw = fh.read(n)
    except OSError as exc:
        raise ArtifactError(f"cannot read {p}: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArtifactError(f"{p} is not a safetensors checkpoint (header is not JSON)") from None
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{p} is not a safetensors checkpoint (bad header)")
    return {str(k): str(v) for k, v in meta.items()}


def tokenizer_sidecars(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Where a checkpoint's tokenizer may lie beside it, in the order they are tried: ``<name>.spm``
    (``model.safetensors.spm``), then ``<stem>.spm`` (``model.spm``)."""
    p = Path(path)
    return p.with_name(p.name + ".spm"), p.with_suffix(".spm")


def checkpoint_info(path: str | os.PathLike[str]) -> ArtifactInfo:
    """:class:`ArtifactInfo` of a torch checkpoint, from its header alone (torch-free).

    The tokenizer comes from the header (``lvg.tokenizer_spm``) or, failing that, a sentencepiece file
    beside the checkpoint: ``<name>.spm`` (``model.safetensors.spm``) or ``<stem>.spm`` (``model.spm``).
    """
    p = Path(path)
    meta = read_safetensors_metadata(p)
    check_checkpoint_header(meta, p)
    try:
        cfg = ModelConfig.from_json(meta[CHECKPOINT_CONFIG_KEY])
    except ConfigError as exc:
        raise ArtifactError(f"{p}: stored config is invalid: {exc}") from None
    tok, identity = _decode_tokenizer(meta, str(p))
    if tok is None:
        for side in tokenizer_sidecars(p):
            if side.is_file():
                try:
                    tok, identity = side.read_bytes(), None
                except OSError as exc:
                    raise ArtifactError(f"cannot read tokenizer {side}: {exc.strerror or exc}") from None
                break
    return ArtifactInfo(
        path=p, kind="torch", config=cfg, precision="fp32", tokenizer_bytes=tok, tokenizer_identity=identity,
        metadata=meta,
    )
