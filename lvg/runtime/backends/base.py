"""The one contract every inference backend implements.

A backend owns one loaded model (an ONNX Runtime session, a TensorRT execution context or a PyTorch
module) created once in its constructor, and maps model inputs to model outputs as numpy arrays:

- ``image`` float32 (B, 3, S, S), normalised; ``text_ids`` int64 (B, L); ``text_mask`` bool (B, L);
- returns :class:`BackendOutput` with ``prob`` float32 (B, S/4, S/4) and, for GRES models,
  ``no_target_logit`` float32 (B,).

``run`` is safe to call from several threads at once (each backend documents how). Pre- and
post-processing live outside the backends (:mod:`lvg.runtime.preprocess`, :mod:`lvg.runtime.postprocess`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lvg.errors import ArtifactError, InputError
from lvg.runtime.artifact import INPUT_NAMES, OUTPUT_NO_TARGET, OUTPUT_PROB, ArtifactInfo

__all__ = ["Backend", "BackendOutput"]


@dataclass(frozen=True)
class BackendOutput:
    """Raw model outputs for a batch of B samples.

    Attributes:
        prob: float32 (B, h, w) probability map over the letterbox canvas.
        no_target_logit: float32 (B,) GRES no-target logits, ``None`` for RIS models.
        attention: float32 (B, 1 + N, g, g) per-expression attention maps (torch backend only, on request).
    """

    prob: np.ndarray
    no_target_logit: np.ndarray | None = None
    attention: np.ndarray | None = None


class Backend(ABC):
    """Base class of the inference backends. Construct through :func:`lvg.runtime.backends.open_backend`."""

    #: Short backend name: ``"onnxruntime"``, ``"tensorrt"`` or ``"torch"``.
    name: str = ""

    def __init__(self, info: ArtifactInfo) -> None:
        self.info = info

    @property
    def device(self) -> str:
        """Where inference runs, in words (e.g. ``"cpu"``, ``"cuda:0"``, ``"onnxruntime:CUDAExecutionProvider"``)."""
        return "cpu"

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
        self, image: np.ndarray, text_ids: np.ndarray, text_mask: np.ndarray, *, return_attention: bool = False
    ) -> BackendOutput:
        """Run the model on one batch (see the module docstring for shapes)."""

    def close(self) -> None:
        """Release the model's resources (optional; garbage collection does it too)."""
