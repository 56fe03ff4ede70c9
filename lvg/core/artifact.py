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
``lvg.tokenizer_spm``           the sentencepiece model bytes, ``"zlib:"`` + base64 of them deflated (files
                                written before that: plain base64); one file is self-contained
``lvg.inputs``                  JSON list of ``{"name", "dtype", "shape"}`` (``"B"`` = batch)
``lvg.outputs``                 JSON list of ``{"name", "dtype", "shape", "meaning"}``
``lvg.precision``               ``"fp32"``, ``"fp16"`` or ``"int8"`` (compute precision; IO is always fp32)
``lvg.gflops_per_sample``       GFLOPs of one sample (1 multiply-add = 2 FLOPs), from count_flops
``lvg.params``                  parameter count
``lvg.opset``                   ONNX opset of the graph
``lvg.exporter``                how the graph was produced (exporter, fp16 converter, simplifier)
``lvg.source``                  file name and sha256 prefix of the checkpoint it came from
``lvg.version``                 the ``latent-vg`` version that exported it
``lvg.train_words``             JSON list of the words of the training sentences (:mod:`lvg.core.domain`)
``lvg.description``             one line describing the training domain (:mod:`lvg.core.domain`)
``lvg.calibration``             int8 files: JSON of how they were calibrated (:mod:`lvg.export.int8`)
==============================  ==============================================================

Model inputs: ``image`` float32 (B, 3, S, S) normalised, ``text_ids`` int64 (B, L), ``text_mask`` bool
(B, L) (True on real tokens; bool because that is what the model consumes, so no conversion node is
needed). Outputs: ``prob`` float32 (B, P, P) in [0, 1] (``P``: the config's ``prob_size``, S/4 or S/2) and,
for GRES variants, ``no_target`` float32 (B,) holding the **logit** (not the probability): the threshold
``sigmoid(logit) > no_target_threshold`` is applied in numpy post-processing, so it stays configurable at run
time.

Where the metadata lives: ONNX ``metadata_props``; TensorRT engines a JSON sidecar ``<engine>.json``
(a TensorRT plan must start with the engine bytes for other tools to open it); torch checkpoints the
safetensors header (``format``, ``format_version``, ``config`` plus the optional ``lvg.tokenizer_*``
entries). :mod:`lvg.core.headers` reads each of them without torch, onnx or safetensors;
:class:`lvg.core.model_file.ModelFile` is the one place that opens a model file.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvg._version import __version__
from lvg.config import ModelConfig
from lvg.core.domain import Domain, read_domain
from lvg.core.limits import check_config, parse_json_object
from lvg.errors import ArtifactError, ConfigError

__all__ = [
    "ArtifactInfo",
    "FORMAT",
    "FORMAT_VERSION",
    "KEY_CALIBRATION",
    "KEY_CONFIG",
    "KEY_TOKENIZER_IDENTITY",
    "KEY_TOKENIZER_SPM",
    "MAX_TOKENIZER_BYTES",
    "encode_tokenizer",
    "ONNX_SUFFIXES",
    "PICKLE_SUFFIXES",
    "TORCH_SUFFIXES",
    "TRT_SUFFIXES",
    "build_metadata",
    "engine_sidecar",
    "info_from_metadata",
    "input_spec",
    "output_spec",
    "in_own_folder",
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
KEY_CALIBRATION = "lvg.calibration"
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


#: Marks a deflated embedded tokenizer (base64 has no colon, so a plain one never starts with it). Deflating
#: halves a sentencepiece model with the default normaliser (245 kB -> 142 kB for the synthetic one).
_ZLIB = "zlib:"
#: The most bytes an embedded tokenizer may inflate to: sentencepiece models are well under a megabyte.
MAX_TOKENIZER_BYTES = 64 << 20


def encode_tokenizer(model_bytes: bytes) -> str:
    """The ``lvg.tokenizer_spm`` value of a sentencepiece model: ``"zlib:"`` + base64 of it deflated."""
    return _ZLIB + base64.b64encode(zlib.compress(model_bytes, 9)).decode("ascii")


def tokenizer_metadata(model_bytes: bytes, identity: str) -> dict[str, str]:
    """The two tokenizer entries (``lvg.tokenizer_spm`` base64, ``lvg.tokenizer_identity``).

    Pass them as ``save_checkpoint(..., metadata=tokenizer_metadata(tok.model_bytes, tok.identity))`` so a
    checkpoint carries its tokenizer like an exported artifact does.
    """
    return {KEY_TOKENIZER_SPM: encode_tokenizer(model_bytes), KEY_TOKENIZER_IDENTITY: identity}


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
    meta = {
        KEY_FORMAT: FORMAT,
        KEY_FORMAT_VERSION: FORMAT_VERSION,
        KEY_CONFIG: cfg.to_json(),
        KEY_PREPROCESS: json.dumps(cfg.to_dict()["preprocess"], sort_keys=True),
        KEY_TOKENIZER_IDENTITY: tokenizer_identity,
        KEY_TOKENIZER_SPM: encode_tokenizer(tokenizer_bytes),
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
        config: the model config (preprocessing included). precision: ``"fp32"`` | ``"fp16"`` | ``"int8"``.
        tokenizer_bytes: the sentencepiece model, ``None`` when the artifact carries none.
        tokenizer_identity: its ``spm-sha256:..`` identity (``None`` likewise).
        gflops_per_sample: GFLOPs of one sample when recorded at export time.
        batch: the fixed batch size of a static-shape artifact (TensorRT engines), ``None`` = dynamic.
        metadata: every raw metadata entry.
        domain: the training words and the one-line description of the training domain, when recorded.
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
    domain: Domain = field(default_factory=Domain)

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
            "description": self.domain.description,
            "train_words": None if self.domain.words is None else len(self.domain.words),
        }


def _decode_tokenizer(meta: Mapping[str, str], where: str) -> tuple[bytes | None, str | None]:
    text = meta.get(KEY_TOKENIZER_SPM)
    identity = meta.get(KEY_TOKENIZER_IDENTITY)
    if text is None:
        return None, identity
    deflated = text.startswith(_ZLIB)
    try:
        data = base64.b64decode(text[len(_ZLIB):].encode("ascii") if deflated else text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ArtifactError(f"{where}: the embedded tokenizer ({KEY_TOKENIZER_SPM}) is not valid base64") from None
    if deflated:
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(data, MAX_TOKENIZER_BYTES)  # bounded: never more than the limit in memory
        except zlib.error:
            raise ArtifactError(f"{where}: the embedded tokenizer ({KEY_TOKENIZER_SPM}) is not valid zlib data") \
                from None
        if not inflater.eof:
            raise ArtifactError(f"{where}: the embedded tokenizer ({KEY_TOKENIZER_SPM}) is cut short or inflates "
                                f"past {MAX_TOKENIZER_BYTES} bytes")
    return data, identity


def _check_format(meta: Mapping[str, str], path: Path, kind: str) -> str:
    """The config JSON of Latent-VG metadata, after checking its format marker and version; a newer
    version may store what this code would misread, so it is refused rather than guessed at."""
    if kind == "torch":
        if meta.get("format") != CHECKPOINT_FORMAT or CHECKPOINT_CONFIG_KEY not in meta:
            raise ArtifactError(f"{path} is a safetensors file but not a Latent-VG checkpoint "
                                "(no config in its header)")
        version, expected, what = meta.get("format_version", ""), CHECKPOINT_FORMAT_VERSION, "checkpoint"
        text = meta[CHECKPOINT_CONFIG_KEY]
    else:
        if meta.get(KEY_FORMAT) != FORMAT or KEY_CONFIG not in meta:
            raise ArtifactError(f"{path} is not a Latent-VG model (no {KEY_CONFIG} in its metadata); "
                                "export it with lvg export")
        version, expected, what = meta.get(KEY_FORMAT_VERSION, ""), FORMAT_VERSION, "artifact"
        text = meta[KEY_CONFIG]
    if version != expected:
        raise ArtifactError(f"{path} has {what} format version {version!r}; this lvg reads {expected!r} "
                            "(a newer lvg wrote it?)")
    return text


#: The largest static batch an engine's metadata may declare.
MAX_ENGINE_BATCH = 4096
PRECISIONS = ("fp32", "fp16", "int8")


def _optional_number(meta: Mapping[str, str], key: str, parse: type, path: Path, lo: float, hi: float) -> Any:
    """``meta[key]`` parsed as ``parse`` and checked to lie in ``[lo, hi]`` (NaN never does); None if absent."""
    if key not in meta:
        return None
    noun = "an integer" if parse is int else "a number"
    try:
        value = parse(meta[key])
    except (ValueError, OverflowError):
        raise ArtifactError(f"{path}: {key} is not {noun}: {meta[key][:40]!r}") from None
    if not lo <= value <= hi:
        raise ArtifactError(f"{path}: {key} is {meta[key][:40]!r}; it must be {noun} in {lo:g}..{hi:g}")
    return value


def _config(text: str, path: Path) -> ModelConfig:
    """The stored config, parsed and within :mod:`lvg.core.limits`' bounds."""
    data = parse_json_object(text, f"{path}: the stored config")
    try:
        cfg = ModelConfig.from_dict(data)
    except ConfigError as exc:
        raise ArtifactError(f"{path}: stored config is invalid: {exc}") from None
    except RecursionError:
        raise ArtifactError(f"{path}: stored config is nested too deeply") from None
    return check_config(cfg, str(path))


def info_from_metadata(path: Path, kind: str, meta: Mapping[str, str]) -> ArtifactInfo:
    """Parse a model file's metadata (ONNX properties, an engine sidecar or a checkpoint's safetensors
    header; ``kind`` says which) into an :class:`ArtifactInfo`.

    Raises:
        ArtifactError: the metadata is not a Latent-VG model's, of a newer format, corrupt, or declares sizes
            or settings outside :mod:`lvg.core.limits`' bounds.
    """
    path = Path(path)
    cfg = _config(_check_format(meta, path, kind), path)
    precision = meta.get(KEY_PRECISION, "fp32")
    if precision not in PRECISIONS:
        raise ArtifactError(f"{path}: {KEY_PRECISION} is {precision[:20]!r}, not one of {', '.join(PRECISIONS)}")
    tok, identity = _decode_tokenizer(meta, str(path))
    return ArtifactInfo(
        path=path,
        kind=kind,
        config=cfg,
        precision=precision,
        tokenizer_bytes=tok,
        tokenizer_identity=identity,
        gflops_per_sample=_optional_number(meta, KEY_GFLOPS, float, path, 0.0, 1e9),
        batch=_optional_number(meta, KEY_TRT_BATCH, int, path, 1, MAX_ENGINE_BATCH),
        metadata=dict(meta),
        domain=read_domain(meta, str(path)),
    )


def in_own_folder(path: Path, what: str) -> Path:
    """``path`` (a file beside a model or in a data folder, named by the model or its metadata) if it stays in
    its folder: a symbolic link to a file in another folder is refused (:class:`ArtifactError`), so metadata
    never makes lvg read a file elsewhere."""
    try:
        target = path.resolve()
        folder = path.parent.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a component over the name limit
        raise ArtifactError(f"cannot resolve {what} {path}: {exc}") from None
    if target.parent != folder:
        raise ArtifactError(f"{what} {path} is a link to {target}, outside its folder; copy the file there instead")
    return path


def engine_sidecar(engine_path: str | os.PathLike[str]) -> Path:
    """Where a TensorRT engine's metadata lives: ``<engine>.json`` (e.g. ``model.engine.json``)."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def tokenizer_sidecars(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Where a model's tokenizer may lie beside it, in the order they are tried: ``<name>.spm``
    (``model.safetensors.spm``), then ``<stem>.spm`` (``model.spm``)."""
    p = Path(path)
    return p.with_name(p.name + ".spm"), p.with_suffix(".spm")
