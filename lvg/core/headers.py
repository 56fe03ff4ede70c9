"""The metadata of the three model file formats, read without torch, onnx, safetensors or an inference session.

- ``.safetensors`` checkpoints: the JSON header's ``__metadata__`` (an 8-byte little-endian length, then
  that many bytes of JSON);
- ``.onnx`` files: ``ModelProto.metadata_props`` (field 14), read from the protobuf wire format;
- TensorRT engines: the ``<engine>.json`` sidecar (:func:`lvg.core.artifact.engine_sidecar`).

Each reader reads only the metadata (and a checkpoint's tensor table: names, dtypes, shapes, offsets): the
tensors, the graph and the engine are skipped, so opening a model file costs the same for lvg-tiny and lvg-b.
The tensor table is checked against the file itself (each tensor's bytes are its shape times its dtype's
size, the tensors tile the data, the data ends where the file ends), so a truncated or forged checkpoint is
refused from its header. :class:`lvg.core.model_file.ModelFile` is their one caller. Every failure is an
:class:`~lvg.errors.ArtifactError` naming the file.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from lvg.core.artifact import engine_sidecar, in_own_folder
from lvg.errors import ArtifactError, first_line

__all__ = ["Header", "TensorEntry", "read_engine_metadata", "read_header", "read_onnx_metadata",
           "read_safetensors_header", "read_safetensors_metadata"]

# A safetensors header is at most this large (the format's own reader refuses more).
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
# ModelProto fields (onnx.proto): the graph, and the key/value metadata.
_ONNX_GRAPH, _ONNX_METADATA = 7, 14
# Protobuf wire types that may appear at the top level of a ModelProto.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


#: Bytes per element of each safetensors dtype.
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file as its header declares it: dtype, shape and byte range in the data."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    """What a model file says about itself: its string metadata and, for checkpoints, its tensor table."""

    metadata: dict[str, str]
    tensors: dict[str, TensorEntry] = field(default_factory=dict)


def read_header(path: Path, kind: str) -> Header:
    """The metadata (and a checkpoint's tensor table) of a model file of ``kind`` (``"onnx"``, ``"tensorrt"``,
    ``"torch"``)."""
    if kind == "torch":
        return read_safetensors_header(path)
    if kind == "onnx":
        return Header(read_onnx_metadata(path))
    return Header(read_engine_metadata(path))


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (see :func:`read_safetensors_header`)."""
    return read_safetensors_header(path).metadata


def read_safetensors_header(path: Path) -> Header:
    """The ``__metadata__`` and tensor table of a safetensors file, parsed directly and checked against the
    file's size.

    Raises:
        ArtifactError: not a safetensors file, unreadable, or a tensor table the file does not hold (a
            truncated file, overlapping or oversized tensors, unknown dtypes).
    """
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            if len(head) != 8:
                raise ArtifactError(_not_safetensors(path, "file too short"))
            (n,) = struct.unpack("<Q", head)
            if n <= 0 or n > _MAX_SAFETENSORS_HEADER or 8 + n > size:
                raise ArtifactError(_not_safetensors(path, "bad header length"))
            raw = fh.read(n)
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ArtifactError(_not_safetensors(path, "header is not JSON")) from None
    meta = header.pop("__metadata__", {}) if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise ArtifactError(_not_safetensors(path, "bad header"))
    tensors = _tensor_table(header, path, data_size=size - 8 - n)
    return Header({str(k): str(v) for k, v in meta.items()}, tensors)


def _tensor_table(header: dict[str, Any], path: Path, data_size: int) -> dict[str, TensorEntry]:
    """The tensor entries of a safetensors header, each checked; together they must tile the data exactly."""
    table: dict[str, TensorEntry] = {}
    for name, entry in header.items():
        what = f"{path}: tensor {str(name)[:80]!r}"
        if not isinstance(entry, dict):
            raise ArtifactError(f"{what} has no dtype, shape and offsets")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise ArtifactError(f"{what} has an unknown dtype {str(dtype)[:20]!r}")
        if not isinstance(shape, list) or len(shape) > 8 or not all(_count(v) for v in shape):
            raise ArtifactError(f"{what} has an invalid shape {repr(shape)[:60]}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_count(v) for v in offsets)
                and offsets[0] <= offsets[1]):
            raise ArtifactError(f"{what} has invalid data offsets {repr(offsets)[:60]}")
        if offsets[1] - offsets[0] != math.prod(shape) * DTYPE_SIZES[dtype]:
            raise ArtifactError(f"{what} declares {offsets[1] - offsets[0]} bytes for a {dtype} tensor of shape "
                                f"{tuple(shape)}")
        table[str(name)] = TensorEntry(dtype, tuple(shape), offsets[0], offsets[1])
    end = 0
    for entry in sorted(table.values(), key=lambda e: (e.begin, e.end)):
        if entry.begin != end:
            raise ArtifactError(f"{path}: its tensors overlap or leave gaps in the data (a damaged header)")
        end = entry.end
    if end > data_size:
        raise ArtifactError(f"{path} is truncated: its header declares {end:,} bytes of tensor data, the file holds "
                            f"{data_size:,}")
    if end < data_size:
        raise ArtifactError(f"{path}: {data_size - end:,} bytes follow the tensor data its header declares")
    return table


def _count(value: Any) -> bool:
    """A non-negative integer small enough to be a real size (JSON may hold anything)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**48


def _not_safetensors(path: Path, why: str) -> str:
    return f"{path} is not a safetensors checkpoint (not a readable safetensors file: {why})"


class _Malformed(Exception):
    """The bytes are not a serialized ModelProto (internal to the ONNX reader)."""


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file.

    Walks the top-level fields of the serialized ``ModelProto`` and skips every one but
    ``metadata_props`` by its length, so the graph and its weights are never read. A file whose fields do
    not end exactly at its end, or that holds no graph, is not an ONNX model (a truncated or corrupt one,
    or a pickle renamed to ``.onnx``).

    Raises:
        ArtifactError: not a loadable ONNX model, or unreadable.
    """
    meta: dict[str, str] = {}
    has_graph = False
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            while fh.tell() < size:
                field, wire = _tag(fh)
                if wire == _LEN:
                    n = _length(fh, size)
                    if field == _ONNX_METADATA:
                        key, value = _string_entry(fh.read(n))
                        meta[key] = value
                    else:
                        has_graph |= field == _ONNX_GRAPH
                        fh.seek(n, io.SEEK_CUR)
                elif wire == _VARINT:
                    _varint(fh)
                else:
                    _skip(fh, 8 if wire == _I64 else 4, size)
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc.strerror or exc}") from None
    except _Malformed as exc:
        raise ArtifactError(f"{path} is not a loadable ONNX model ({exc})") from None
    if not has_graph:
        raise ArtifactError(f"{path} is not a loadable ONNX model (no graph)")
    return meta


def _varint(fh: BinaryIO) -> int:
    value = 0
    for shift in range(0, 70, 7):
        byte = fh.read(1)
        if not byte:
            raise _Malformed("truncated")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    raise _Malformed("varint longer than 10 bytes")


def _tag(fh: BinaryIO) -> tuple[int, int]:
    field, wire = divmod(_varint(fh), 8)
    if field == 0 or wire not in (_VARINT, _I64, _LEN, _I32):
        raise _Malformed(f"bad field tag (field {field}, wire type {wire})")
    return field, wire


def _length(fh: BinaryIO, size: int) -> int:
    n = _varint(fh)
    if fh.tell() + n > size:
        raise _Malformed("truncated")
    return n


def _skip(fh: BinaryIO, n: int, size: int) -> None:
    if fh.tell() + n > size:
        raise _Malformed("truncated")
    fh.seek(n, io.SEEK_CUR)


def _string_entry(data: bytes) -> tuple[str, str]:
    """A ``StringStringEntryProto``: ``key`` (field 1) and ``value`` (field 2), both UTF-8."""
    fh, found = io.BytesIO(data), {1: b"", 2: b""}
    while fh.tell() < len(data):
        field, wire = _tag(fh)
        if wire != _LEN:
            raise _Malformed("metadata entry with a non-string field")
        value = fh.read(_length(fh, len(data)))
        if field in found:
            found[field] = value
    try:
        return found[1].decode("utf-8"), found[2].decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed("metadata entry is not UTF-8") from None


def read_engine_metadata(engine_path: Path) -> dict[str, str]:
    """The metadata sidecar of a TensorRT engine.

    Raises:
        ArtifactError: the sidecar is missing or not a JSON object of strings.
    """
    side = engine_sidecar(engine_path)
    try:
        found = side.is_file()
    except OSError:  # a sidecar name over the system's limit cannot exist
        found = False
    if not found:
        raise ArtifactError(f"{engine_path}: metadata sidecar {side.name} not found (build engines with lvg export "
                            "--format trt)")
    in_own_folder(side, "engine metadata sidecar")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ArtifactError(f"{side}: unreadable engine metadata ({first_line(exc, 120)})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ArtifactError(f"{side}: engine metadata must be a JSON object of strings")
    return data
