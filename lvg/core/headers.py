"""The metadata of the three model file formats, read without torch, onnx, safetensors or an inference session.

- ``.safetensors`` checkpoints: the JSON header's ``__metadata__`` (an 8-byte little-endian length, then
  that many bytes of JSON);
- ``.onnx`` files: ``ModelProto.metadata_props`` (field 14), read from the protobuf wire format;
- TensorRT engines: the ``<engine>.json`` sidecar (:func:`lvg.core.artifact.engine_sidecar`).

Each reader reads only the metadata: the tensors, the graph and the engine are skipped, so opening a model
file costs the same for lvg-tiny and lvg-b. :class:`lvg.core.model_file.ModelFile` is their one caller.
Every failure is an :class:`~lvg.errors.ArtifactError` naming the file.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import BinaryIO

from lvg.core.artifact import engine_sidecar
from lvg.errors import ArtifactError

__all__ = ["read_engine_metadata", "read_header", "read_onnx_metadata", "read_safetensors_metadata"]

# A safetensors header is at most this large (the format's own reader refuses more).
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
# ModelProto fields (onnx.proto): the graph, and the key/value metadata.
_ONNX_GRAPH, _ONNX_METADATA = 7, 14
# Protobuf wire types that may appear at the top level of a ModelProto.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def read_header(path: Path, kind: str) -> dict[str, str]:
    """The string -> string metadata of a model file of ``kind`` (``"onnx"``, ``"tensorrt"``, ``"torch"``)."""
    if kind == "torch":
        return read_safetensors_metadata(path)
    if kind == "onnx":
        return read_onnx_metadata(path)
    return read_engine_metadata(path)


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, parsed directly.

    Raises:
        ArtifactError: not a safetensors file, or unreadable.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                raise ArtifactError(_not_safetensors(path, "file too short"))
            (n,) = struct.unpack("<Q", head)
            if n <= 0 or n > _MAX_SAFETENSORS_HEADER:
                raise ArtifactError(_not_safetensors(path, "bad header length"))
            raw = fh.read(n)
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArtifactError(_not_safetensors(path, "header is not JSON")) from None
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise ArtifactError(_not_safetensors(path, "bad header"))
    return {str(k): str(v) for k, v in meta.items()}


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
    if not side.is_file():
        raise ArtifactError(f"{engine_path}: metadata sidecar {side.name} not found (build engines with lvg export "
                            "--format trt)")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{side}: unreadable engine metadata ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ArtifactError(f"{side}: engine metadata must be a JSON object of strings")
    return data
