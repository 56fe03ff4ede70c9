"""Hostile and damaged files made from real ones, byte by byte, and a peak-memory probe.

- :func:`rewrite_safetensors`: a safetensors file with its ``__metadata__`` (or tensor table) edited and its
  tensor data copied unchanged, as an attacker with a hex editor would make it;
- :func:`damage_tensor_data`: bytes inside a checkpoint's tensor data overwritten, header intact;
- :func:`set_onnx_metadata`: an ONNX file with some ``metadata_props`` replaced;
- :class:`PeakMemory`: how far resident memory rose above where it stood, over a block (Linux's VmHWM).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any


def read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The parsed JSON header of a safetensors file and the offset where its tensor data starts."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(n)), 8 + n


def rewrite_safetensors(src: Path, dst: Path, *, metadata: dict[str, str] | None = None,
                        edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Copy ``src`` to ``dst`` with ``metadata`` merged into its ``__metadata__`` and ``edit`` applied to the
    whole header (tensor table included); the tensor data bytes are copied as they are."""
    header, start = read_safetensors_header(src)
    if metadata:
        header.setdefault("__metadata__", {}).update(metadata)
    if edit is not None:
        edit(header)
    raw = json.dumps(header).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    data = src.read_bytes()[start:]
    dst.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return dst


def damage_tensor_data(path: Path, tensor: str, value: bytes = b"\xff\xff\xff\x7f" * 4) -> None:
    """Overwrite the first bytes of ``tensor``'s data in place (the header is left intact)."""
    header, start = read_safetensors_header(path)
    begin = header[tensor]["data_offsets"][0]
    with open(path, "r+b") as fh:
        fh.seek(start + begin)
        fh.write(value)


def set_onnx_metadata(src: Path, dst: Path, updates: dict[str, str]) -> Path:
    """Copy an ONNX file with the ``metadata_props`` in ``updates`` replaced (or added)."""
    import onnx

    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(updates)
    del model.metadata_props[:]
    for key, value in sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(dst))
    return dst


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class PeakMemory:
    """``with PeakMemory() as peak: ...`` then ``peak.growth_mib``: the highest resident memory during the
    block minus the resident memory at its start. Linux only: it resets the process's high-water mark
    (``/proc/self/clear_refs``) at the start and reads it (``VmHWM``) at the end."""

    def __enter__(self) -> PeakMemory:
        Path("/proc/self/clear_refs").write_text("5")
        self.start_kib = _rss_kib("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth_mib = (_rss_kib("VmHWM") - self.start_kib) / 1024
