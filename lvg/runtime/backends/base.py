"""The one contract every inference backend implements.

A backend owns one loaded model (an ONNX Runtime session, a TensorRT execution context or a PyTorch
module) created once in its constructor from a :class:`~lvg.core.model_file.ModelFile`, and maps model
inputs to model outputs as numpy arrays (:mod:`lvg.core.outputs`):

- ``image`` float32 (B, 3, S, S), normalised; ``text_ids`` int64 (B, L); ``text_mask`` bool (B, L);
- returns :class:`~lvg.core.outputs.ModelOutput` with ``prob`` float32 (B, P, P), ``P`` the config's
  ``prob_size`` (S/4 or S/2), and, for GRES models, ``no_target_logit`` float32 (B,).

:meth:`Backend.run` takes one batch the model accepts; :meth:`Backend.run_arrays` any number of samples
(chunked and padded to what the model accepts, outputs checked), which makes every backend an
:class:`~lvg.core.outputs.ArrayModel`. ``run`` is safe to call from several threads at once (each backend
documents how). Pre- and post-processing live outside the backends (:mod:`lvg.core.preprocess`,
:mod:`lvg.core.postprocess`).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from lvg.config import ModelConfig
from lvg.core.artifact import INPUT_NAMES, OUTPUT_NO_TARGET, OUTPUT_PROB, ArtifactInfo
from lvg.core.model_file import ModelFile
from lvg.core.outputs import ModelOutput
from lvg.errors import ArtifactError, InputError, LVGError, first_line

__all__ = ["Backend"]


class Backend(ABC):
    """Base class of the inference backends. Construct through :func:`lvg.runtime.backends.open_backend`."""

    #: Short backend name: ``"onnxruntime"``, ``"tensorrt"`` or ``"torch"``.
    name: str = ""
    #: Why a faster path was not taken when the precision was chosen automatically (e.g. which extra to
    #: install for bf16), or ``None``.
    note: str | None = None

    def __init__(self, model_file: ModelFile) -> None:
        self.model_file = model_file

    @property
    def info(self) -> ArtifactInfo:
        """What the model file says about itself (config, precision, tokenizer, metadata)."""
        return self.model_file.info

    @property
    def config(self) -> ModelConfig:
        return self.model_file.config

    @property
    def precision(self) -> str:
        """The numeric precision the model runs at (``"fp32"``, ``"bf16"``, ``"fp16"``): the file's own unless
        the backend was loaded at another (``open_backend(..., precision=...)``)."""
        return self.info.precision

    @property
    def device(self) -> str:
        """Where inference runs, in words (e.g. ``"cpu"``, ``"cuda:0"``, ``"onnxruntime:CUDAExecutionProvider"``)."""
        return "cpu"

    @property
    def on_cpu(self) -> bool:
        """Whether inference runs on the CPU (whose matmul rate ``lvg bench`` compares with)."""
        return True

    @property
    def max_batch(self) -> int | None:
        """The largest batch one :meth:`run` call takes; ``None`` = any. Static engines return their batch."""
        return self.info.batch

    @property
    def fixed_batch(self) -> bool:
        """True when every :meth:`run` call must carry exactly :attr:`max_batch` samples (static engines)."""
        return False

    @property
    def supports_attention(self) -> bool:
        return False

    @property
    def supports_expressions(self) -> bool:
        """Whether outputs can hold each expression's own map (exports hold only the averaged ``prob``)."""
        return False

    def input_dims(self) -> dict[str, tuple[int, ...]]:
        """Each input's shape after the batch dimension, from the config in the model's metadata."""
        cfg = self.info.config
        s, length = cfg.encoder.img_size, cfg.preprocess.max_text_len
        return {"image": (3, s, s), "text_ids": (length,), "text_mask": (length,)}

    def check_io(self, path: Path, inputs: Mapping[str, Sequence[object]], outputs: Collection[str]) -> None:
        """Refuse at load, not on the first request, a graph or engine that contradicts its own metadata.

        ``inputs`` maps each input name to its full shape (dim 0 the batch; a non-int dim is symbolic and
        matches anything); ``outputs`` are the output names. Raises :class:`ArtifactError`.
        """
        missing = [n for n in INPUT_NAMES if n not in inputs] + ([] if OUTPUT_PROB in outputs else [OUTPUT_PROB])
        if missing:
            raise ArtifactError(f"{path}: the model lacks the Latent-VG inputs/outputs {', '.join(missing)} "
                                "(it needs image, text_ids, text_mask -> prob)")
        name = self.info.config.name
        for node, want in self.input_dims().items():
            dims = tuple(inputs[node][1:])
            if len(dims) != len(want) or any(isinstance(d, int) and d != w for d, w in zip(dims, want)):
                raise ArtifactError(
                    f"{path}: the graph's input {node} is (B, {', '.join(map(str, dims))}) but its metadata says "
                    f"{name} takes (B, {', '.join(map(str, want))}): the graph does not match its metadata"
                )
        if (OUTPUT_NO_TARGET in outputs) != self.info.gres:
            has = "has a" if OUTPUT_NO_TARGET in outputs else "has no"
            raise ArtifactError(
                f"{path}: its metadata says {name} (gres={self.info.gres}) but the graph {has} no_target output"
            )

    def check_inputs(self, image: np.ndarray, text_ids: np.ndarray, text_mask: np.ndarray) -> None:
        """Shape / dtype checks shared by all backends (raises :class:`InputError`)."""
        dims = self.input_dims()
        s, length = dims["image"][-1], dims["text_ids"][0]
        b = image.shape[0] if image.ndim == 4 else -1
        if image.shape != (b, 3, s, s) or image.dtype != np.float32:
            raise InputError(f"image batch must be float32 (B, 3, {s}, {s}), got {image.dtype} {image.shape}")
        if text_ids.shape != (b, length) or text_ids.dtype != np.int64:
            raise InputError(f"text_ids must be int64 ({b}, {length}), got {text_ids.dtype} {text_ids.shape}")
        if text_mask.shape != (b, length) or text_mask.dtype != np.bool_:
            raise InputError(f"text_mask must be bool ({b}, {length}), got {text_mask.dtype} {text_mask.shape}")
        if self.fixed_batch and b != self.max_batch:
            raise InputError(f"this engine was built for batch {self.max_batch}, got {b}")
        if self.max_batch is not None and b > self.max_batch:
            raise InputError(f"batch {b} is larger than this model's maximum {self.max_batch}")

    def feeds(
        self, image: np.ndarray, text_ids: np.ndarray, text_mask: np.ndarray, *, return_attention: bool
    ) -> dict[str, np.ndarray]:
        """Checked graph inputs by name, for backends that run an exported graph (no attention maps)."""
        if return_attention:
            raise InputError("attention maps need the torch backend: load the .safetensors checkpoint")
        self.check_inputs(image, text_ids, text_mask)
        return {"image": image, "text_ids": text_ids, "text_mask": text_mask}

    @abstractmethod
    def run(
        self, image: np.ndarray, text_ids: np.ndarray, text_mask: np.ndarray, *, return_attention: bool = False,
        return_expressions: bool = False,
    ) -> ModelOutput:
        """Run the model on one batch of at most :attr:`max_batch` samples (see the module docstring for
        shapes). ``return_expressions`` is honoured where :attr:`supports_expressions` (else ignored)."""

    def run_arrays(self, images: np.ndarray, text_ids: np.ndarray, text_mask: np.ndarray, *,
                   return_attention: bool = False, return_expressions: bool = False) -> ModelOutput:
        """The model on any number of preprocessed samples, in chunks its batch limit allows (padding
        static engines), with every call's failures and malformed outputs turned into one-line errors.

        Args:
            images: float32 ``(B, 3, S, S)`` letterboxed, normalised images (:mod:`lvg.core.preprocess`).
            text_ids: int64 ``(B, L)`` token ids and text_mask: bool ``(B, L)``, as
                :meth:`Tokenizer.encode <lvg.core.tokenizer.Tokenizer.encode>` makes them.

        Returns:
            The raw outputs over the letterbox canvas (:class:`~lvg.core.outputs.ModelOutput`).

        Raises:
            ArtifactError: the model failed on inputs built to its own metadata, or returned outputs of the
                wrong shape or non-finite values (a file whose graph does not match its metadata).
        """
        n = len(images)
        limit = self.max_batch or n
        chunks: dict[str, list[np.ndarray]] = {f.name: [] for f in dataclasses.fields(ModelOutput)}
        for start in range(0, n, limit):
            img = images[start : start + limit]  # (k, 3, S, S)
            ids = text_ids[start : start + limit]  # (k, L)
            masks = text_mask[start : start + limit]  # (k, L)
            k = len(img)
            if self.fixed_batch and k < limit:
                # Static engines take exactly `limit` rows: repeat the last sample, drop its outputs.
                pad = limit - k
                img = np.concatenate([img, np.repeat(img[-1:], pad, axis=0)])
                ids = np.concatenate([ids, np.repeat(ids[-1:], pad, axis=0)])
                masks = np.concatenate([masks, np.repeat(masks[-1:], pad, axis=0)])
            out = self._checked_run(img, ids, masks, return_attention, return_expressions)
            for name, parts in chunks.items():
                value = getattr(out, name)
                if value is not None:
                    parts.append(value[:k])
        return ModelOutput(**{name: np.concatenate(parts) if parts else None for name, parts in chunks.items()})

    def _checked_run(self, images: np.ndarray, ids: np.ndarray, masks: np.ndarray, return_attention: bool,
                     return_expressions: bool) -> ModelOutput:
        """One :meth:`run` whose failures and malformed outputs become one-line :class:`ArtifactError`.

        The inputs were built to the model's own metadata, so a failure means the file's graph or weights do
        not match its metadata (or the runtime broke): an error about the model, not the input.
        """
        b, path = images.shape[0], self.info.path
        try:
            out = self.run(images, ids, masks, return_attention=return_attention,
                           return_expressions=return_expressions)
        except LVGError:
            raise
        except MemoryError:
            raise ArtifactError(f"out of memory running {path.name} on a batch of {b}") from None
        except Exception as exc:  # ORT / TensorRT / torch raise their own types
            raise ArtifactError(
                f"{path} failed on inputs built to its own metadata ({first_line(exc)}); "
                "the file does not match its metadata or is corrupt"
            ) from None
        p = self.config.prob_size
        prob = np.asarray(out.prob)
        if prob.shape != (b, p, p):
            raise ArtifactError(
                f"{path} returned prob of shape {prob.shape}, expected {(b, p, p)} for "
                f"{self.config.name}: the graph does not match its metadata"
            )
        # Whether the head exists was checked at load (check_io); the sizes only show here.
        nt = out.no_target_logit
        if nt is not None and np.shape(nt) != (b,):
            raise ArtifactError(f"{path} returned no_target of shape {np.shape(nt)}, expected {(b,)}")
        if not np.isfinite(prob).all() or (nt is not None and np.isnan(nt).any()):
            raise ArtifactError(f"{path} produced NaN / infinite probabilities: the model is broken")
        return out

    def close(self) -> None:  # noqa: B027 - optional: a backend without resources of its own keeps this
        """Release the model's resources (optional; garbage collection does it too)."""
