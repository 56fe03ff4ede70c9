"""The files of REFER / gREFER / COCO datasets, read safely: the refs pickle, JSON files and COCO masks.

``refs(*.p)`` is the one pickle this package reads, because the REFER format requires it: it is read with
a restricted unpickler that admits only what REFER files hold (lists, dicts, tuples, strings, numbers, and
sets, which protocol 2 rebuilds through ``builtins.set``) and refuses every other class or callable, those
that allocate by a count (``bytearray(n)``, ``bytes(n)``) included; files over :data:`MAX_REFS_BYTES` are
refused before they are read, so what a file can make the reader allocate is bounded by a small multiple of
its size.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from lvg.errors import InputError, require

__all__ = ["decode_segmentation", "read_json", "read_refs_pickle"]


# --------------------------------------------------------------------------------------------------
# The restricted unpickler for refs(*.p)

#: The only globals a REFER pickle refers to: protocol 2 pickles sets as ``builtins.set([...])`` (lists, dicts,
#: tuples, strings and numbers have opcodes of their own and need none).
_SAFE_BUILTINS = frozenset({"set", "frozenset"})
#: Largest refs file read (RefCOCOg's refs(umd).p, the largest REFER file, is about 30 MB).
MAX_REFS_BYTES = 512 * 1024 * 1024


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds only what REFER files hold; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 pickles (the original REFER files) name the builtins module "__builtin__".
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            import builtins

            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def read_refs_pickle(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a REFER ``refs(*.p)`` file: a list of dicts of plain values.

    Raises:
        InputError: missing / unreadable file, a pickle that holds anything but builtin containers and
            scalars (classes, functions, ``os.system`` reduces ...), or not a list of dicts.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_REFS_BYTES:
            raise InputError(f"REFER refs file {p} is too large ({size:,} bytes; at most {MAX_REFS_BYTES:,})")
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"REFER refs file not found: {p}") from None
    except OSError as exc:
        raise InputError(f"cannot read REFER refs file {p}: {exc.strerror or exc}") from None
    try:
        # Python 2's str objects (the original REFER files) come back as bytes; _decode_bytes makes them
        # UTF-8 text (latin-1 decoding at load time would garble any non-ASCII expression).
        refs = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise InputError(f"unsafe or corrupt REFER refs pickle {p}: {exc}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as exc:
        raise InputError(f"corrupt REFER refs pickle {p}: {type(exc).__name__}") from None
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise InputError(f"REFER refs pickle {p} does not hold a list of ref dicts")
    try:
        return [_decode_bytes(r) for r in refs]
    except RecursionError:
        raise InputError(f"REFER refs pickle {p} is nested far deeper than any ref") from None


def _decode_bytes(value: Any) -> Any:
    """Turn bytes left by Python 2 pickles into str, recursively."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {_decode_bytes(k): _decode_bytes(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_decode_bytes(v) for v in value)
    return value


def read_json(path: Path, what: str) -> Any:
    try:
        with path.open("rb") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} is not valid JSON ({exc}): {path}") from None
    except RecursionError:
        raise InputError(f"{what} is JSON nested far deeper than any dataset file: {path}") from None


# --------------------------------------------------------------------------------------------------
# Masks


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` as a bool (height, width) mask.

    Accepts polygons (a list of flat ``[x0, y0, x1, y1, ...]`` lists, merged), uncompressed RLE
    (``{"size": [h, w], "counts": [int, ...]}``) and compressed RLE (``counts`` a str or bytes).
    Decoding is pycocotools' (the reference implementation of the format).

    Raises:
        MissingDependencyError: pycocotools is not installed (extra ``train``).
        InputError: an unrecognised segmentation or an RLE of another size.
    """
    mask_api = require("pycocotools.mask", extra="train", purpose="decoding COCO masks", package="pycocotools")
    h, w = int(height), int(width)
    try:
        if isinstance(segmentation, list):
            # pycocotools reads a 4-number list as a box and cannot rasterise < 3 points: skip those.
            polys = [[float(v) for v in poly] for poly in segmentation if isinstance(poly, list) and len(poly) >= 6]
            if not polys:
                return np.zeros((h, w), dtype=bool)
            rle = mask_api.merge(mask_api.frPyObjects(polys, h, w))
        elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
            size = [int(v) for v in segmentation["size"]]
            if size != [h, w]:
                raise InputError(f"RLE of size {size} on an image of size {[h, w]}")
            counts = segmentation["counts"]
            if isinstance(counts, list):
                rle = mask_api.frPyObjects({"size": size, "counts": [int(c) for c in counts]}, h, w)
            elif isinstance(counts, (str, bytes)):
                rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
            else:
                raise InputError(f"RLE counts must be a list or a string, got {type(counts).__name__}")
        else:
            raise InputError(f"unrecognised COCO segmentation of type {type(segmentation).__name__}")
        with warnings.catch_warnings():
            # pycocotools 2.0.x under numpy 2 warns about its own __array__ on every decode.
            warnings.filterwarnings("ignore", message=".*copy keyword.*", category=DeprecationWarning)
            mask = mask_api.decode(rle)
    except InputError:
        raise
    except (ValueError, TypeError, KeyError, UnicodeEncodeError) as exc:
        raise InputError(f"cannot decode COCO segmentation: {exc}") from None
    if mask.ndim == 3:
        mask = mask.any(axis=2)
    if mask.shape != (h, w):
        raise InputError(f"decoded mask has shape {mask.shape}, expected {(h, w)}")
    return np.ascontiguousarray(mask.astype(bool))
