"""The one place that opens a model file: what a path is, whether it may be read, and what it says about itself.

Every layer that takes a model path goes through :meth:`ModelFile.open`: ``Grounder.load`` and the
inference backends, ``lvg export``, ``lvg train --init`` / ``--resume``, ``lvg eval`` and ``lvg info``.
Opening reads the file's metadata once (:mod:`lvg.core.headers`) and nothing else; loading the weights,
graph or engine is the business of whoever asked (a backend, :func:`lvg.modeling.load_checkpoint`).

Tokenizers: a model's own tokenizer is the one embedded in its metadata, else a sentencepiece file beside
it (:func:`~lvg.core.artifact.tokenizer_sidecars`). :meth:`ModelFile.tokenizer` resolves an explicit file
first, then the model's own, and checks it against the model's vocabulary; :meth:`ModelFile.is_own` says
whether a tokenizer is the model's own, leaving the policy for one that is not (the runtime refuses it,
training warns or refuses) to the caller.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lvg.config import ModelConfig
from lvg.core.artifact import (
    ONNX_SUFFIXES,
    PICKLE_SUFFIXES,
    TORCH_SUFFIXES,
    TRT_SUFFIXES,
    ArtifactInfo,
    in_own_folder,
    info_from_metadata,
    tokenizer_sidecars,
)
from lvg.core.headers import TensorEntry, read_header
from lvg.core.limits import check_tensors
from lvg.core.tokenizer import Tokenizer, check_vocabulary
from lvg.errors import ArtifactError, CheckpointError, InputError

__all__ = ["KINDS", "ModelFile"]

#: File kinds by suffix: ONNX Runtime graphs, TensorRT engines, PyTorch checkpoints.
KINDS: dict[str, tuple[str, ...]] = {"onnx": ONNX_SUFFIXES, "tensorrt": TRT_SUFFIXES, "torch": TORCH_SUFFIXES}

@dataclass(frozen=True)
class ModelFile:
    """A model file, opened and checked once. Build it with :meth:`open`.

    Attributes:
        info: what the file says about itself: its kind, config, precision, own tokenizer and raw metadata.
        tensors: a checkpoint's tensor table (name -> dtype, shape, byte range), checked against the file and
            the config; empty for other kinds.
    """

    info: ArtifactInfo
    tensors: Mapping[str, TensorEntry] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: str | os.PathLike[str] | ModelFile, *, checkpoint: bool = False) -> ModelFile:
        """Open ``path`` (an already opened :class:`ModelFile` is returned as it is).

        1. Its suffix names its kind (``.onnx``, ``.engine`` / ``.plan``, ``.safetensors``). Pickle files
           (``.pth``, ``.pt``, ``.bin``, ...) are refused by name and never opened: unpickling can run code.
        2. It must be a readable, non-empty regular file (a FIFO or device would block or never end).
        3. Its metadata is read once and must be a Latent-VG model's, of a format version this lvg reads,
           with a valid config within :mod:`lvg.core.limits`' bounds; a checkpoint's tensor table must be
           the file's and its config's (so nothing is built from a config its tensors do not back).
        4. Its own tokenizer is the embedded one, else a ``.spm`` file beside it (not a link elsewhere).

        Args:
            checkpoint: the caller needs a ``.safetensors`` checkpoint (loading weights, training, export):
                any other kind is refused.

        Raises:
            ArtifactError: any of the above fails; a :class:`CheckpointError` when the file is (or had to
                be) a checkpoint.
        """
        if isinstance(path, ModelFile):
            if checkpoint and path.kind != "torch":
                raise CheckpointError(f"{path.path} is not a .safetensors checkpoint")
            return path
        if not isinstance(path, (str, os.PathLike)):
            raise InputError(f"a model path must be a str or os.PathLike, got {type(path).__name__}")
        p = Path(path)
        kind = _kind(p, checkpoint)
        try:
            _check_file(p, kind)
            header = read_header(p, kind)
            info = info_from_metadata(p, kind, header.metadata)
            if kind == "torch":
                check_tensors({name: t.shape for name, t in header.tensors.items()}, info.config, str(p))
            if info.tokenizer_bytes is None:
                info = dataclasses.replace(info, tokenizer_bytes=_sidecar_tokenizer(p))
        except ArtifactError as exc:
            if kind == "torch" and not isinstance(exc, CheckpointError):
                raise CheckpointError(str(exc)) from None
            raise
        return cls(info, header.tensors)

    @property
    def path(self) -> Path:
        return self.info.path

    @property
    def kind(self) -> str:
        """``"onnx"``, ``"tensorrt"`` or ``"torch"``."""
        return self.info.kind

    @property
    def config(self) -> ModelConfig:
        return self.info.config

    @property
    def metadata(self) -> dict[str, str]:
        """Every raw metadata entry (for checkpoints: the safetensors header's, training state included)."""
        return dict(self.info.metadata)

    def tokenizer(self, explicit: str | os.PathLike[str] | bytes | None = None) -> Tokenizer | None:
        """The tokenizer to read this model's text with: ``explicit`` (a sentencepiece file or its bytes) if
        given, else the model's own (embedded, else beside it); ``None`` when there is neither.

        Raises:
            ArtifactError: the explicit file is missing or not a sentencepiece model.
            TokenizerError: the tokenizer has more ids than the model's vocabulary.
        """
        if explicit is not None:
            if not isinstance(explicit, (str, os.PathLike, bytes)):
                raise InputError(f"a tokenizer must be a path or sentencepiece bytes, got {type(explicit).__name__}")
            if isinstance(explicit, bytes):
                tok, what = Tokenizer.from_bytes(explicit), "the given tokenizer"
            else:
                tok, what = Tokenizer.from_file(explicit), f"tokenizer {explicit}"
        elif self.info.tokenizer_bytes is not None:
            tok, what = Tokenizer.from_bytes(self.info.tokenizer_bytes), f"the tokenizer of {self.path.name}"
        else:
            return None
        check_vocabulary(tok, self.config, what=what)
        return tok

    def is_own(self, tokenizer: Tokenizer) -> bool:
        """Whether ``tokenizer`` is the one this model was trained with (True when the model names none)."""
        if self.info.tokenizer_identity is not None:
            return tokenizer.identity == self.info.tokenizer_identity
        if self.info.tokenizer_bytes is not None:
            return tokenizer.model_bytes == self.info.tokenizer_bytes
        return True


def _kind(path: Path, checkpoint: bool) -> str:
    """The file kind from the suffix, before the file is touched."""
    noun = "checkpoint" if checkpoint or path.suffix.lower() in TORCH_SUFFIXES else "model"
    error = CheckpointError if noun == "checkpoint" else ArtifactError
    try:
        is_dir = path.is_dir()
    except OSError as exc:  # e.g. a name component over the system's limit
        raise error(f"cannot use {noun} path {path}: {exc.strerror or exc}") from None
    if is_dir:
        raise error(f"{noun} path is a directory, not a file: {path}")
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise error(
            f"{path}: unknown model file type {suffix!r}: {suffix} files are pickles, which can run code when "
            "loaded, so lvg never opens them; use a .safetensors checkpoint or an exported .onnx"
        )
    kind = next((k for k, suffixes in KINDS.items() if suffix in suffixes), None)
    if kind is None:
        known = ", ".join(s for suffixes in KINDS.values() for s in suffixes)
        raise error(f"{path}: unknown model file type {suffix or '(no suffix)'!r}; expected one of {known}")
    if checkpoint and kind != "torch":
        raise CheckpointError(f"{path} is not a .safetensors checkpoint (an exported {kind} model holds no weights "
                              "to load into PyTorch)")
    return kind


def _check_file(path: Path, kind: str) -> None:
    noun = "checkpoint" if kind == "torch" else "model"
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ArtifactError(f"{noun} not found: {path}") from None
    except OSError as exc:
        raise ArtifactError(f"cannot read {noun} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ArtifactError(f"{noun} path is not a regular file: {path}")
    if st.st_size == 0:
        raise ArtifactError(f"{noun} file is empty (0 bytes): {path}")
    if not os.access(path, os.R_OK):
        raise ArtifactError(f"permission denied reading {noun}: {path}")


def _sidecar_tokenizer(path: Path) -> bytes | None:
    for side in tokenizer_sidecars(path):
        try:
            if not side.is_file():
                continue
        except OSError:  # a sidecar name over the system's limit cannot exist
            continue
        in_own_folder(side, "tokenizer")
        try:
            return side.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"cannot read tokenizer {side}: {exc.strerror or exc}") from None
    return None
