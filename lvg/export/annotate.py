"""Record a model's training domain (its training words and a one-line description) in an existing artifact.

``lvg export`` writes these entries itself; :func:`annotate` adds or replaces them in a file exported
before they existed (the bundled model was annotated this way), without touching the graph or any other
entry. It can be run again at any time: the entries are replaced, never duplicated. Torch-free; ONNX files
need the ``onnx`` package (``pip install 'latent-vg[export]'``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lvg.core.artifact import ONNX_SUFFIXES, TRT_SUFFIXES, engine_sidecar
from lvg.core.atomic import atomic_output
from lvg.core.domain import domain_metadata
from lvg.core.model_file import ModelFile
from lvg.errors import ArtifactError, InputError, require

__all__ = ["annotate", "replace_onnx_metadata", "set_onnx_metadata"]


def annotate(
    path: str | os.PathLike[str], *, words: Iterable[str] | None = None, description: str | None = None
) -> dict[str, str]:
    """Write ``lvg.train_words`` and / or ``lvg.description`` into the model at ``path``.

    Args:
        path: an exported model: ``.onnx`` (its ``metadata_props``) or a TensorRT engine (its ``<engine>.json``
            sidecar). The file is opened as the runtime opens it first, so only a Latent-VG model is changed.
        words: the words of the training sentences; ``None`` leaves the recorded ones as they are.
        description: one line on the training domain; ``None`` leaves the recorded one as it is.

    Returns:
        The entries written.

    Raises:
        InputError: nothing to write, a bad description, or a ``.safetensors`` checkpoint (export it instead).
        ArtifactError: the file is not a Latent-VG model.
    """
    if words is None and description is None:
        raise InputError("nothing to record: give the training words, a description or both")
    entries = domain_metadata(words, description)
    p = Path(path)
    if p.suffix.lower() not in ONNX_SUFFIXES + TRT_SUFFIXES:
        raise InputError(f"{p}: annotate takes an exported model (.onnx, .engine, .plan); for a checkpoint, pass "
                         "--train-data / --description to lvg export")
    ModelFile.open(p)  # the same checks as the runtime: a foreign or broken file is refused untouched
    if p.suffix.lower() in ONNX_SUFFIXES:
        _annotate_onnx(p, entries)
    else:
        _annotate_sidecar(engine_sidecar(p), entries)
    return entries


def set_onnx_metadata(proto: Any, entries: Mapping[str, str], *, keep: bool = True) -> None:
    """Write ``entries`` into an ONNX ``ModelProto``'s ``metadata_props``, sorted by key; ``keep`` keeps the
    other entries already there (``False`` replaces them all)."""
    kept = [(e.key, e.value) for e in proto.metadata_props if keep and e.key not in entries]
    del proto.metadata_props[:]
    for key, value in sorted([*kept, *entries.items()]):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def replace_onnx_metadata(proto: Any, entries: Mapping[str, str]) -> None:
    """Make ``entries`` the whole of an ONNX ``ModelProto``'s metadata and name latent-vg as its producer: what
    every file lvg writes from scratch carries."""
    set_onnx_metadata(proto, entries, keep=False)
    proto.producer_name = "latent-vg"


def _annotate_onnx(path: Path, entries: dict[str, str]) -> None:
    onnx = require("onnx", extra="export", purpose="writing ONNX metadata")
    proto = onnx.load(str(path))
    set_onnx_metadata(proto, entries)
    with atomic_output(path) as tmp:
        try:
            onnx.save(proto, str(tmp))
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None


def _annotate_sidecar(sidecar: Path, entries: dict[str, str]) -> None:
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read the engine's metadata {sidecar}: {exc}") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"the engine's metadata {sidecar} is not a JSON object")
    meta.update(entries)
    with atomic_output(sidecar) as tmp:
        tmp.write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
