"""What running a model gives, as numpy arrays, whatever runs it (ONNX Runtime, TensorRT, PyTorch).

The inputs are the model inputs of :mod:`lvg.core.artifact`: ``image`` float32 (B, 3, S, S) letterboxed and
normalised (:mod:`lvg.core.preprocess`), ``text_ids`` int64 (B, L) and ``text_mask`` bool (B, L)
(:meth:`lvg.core.tokenizer.Tokenizer.encode`). Every runtime backend (:mod:`lvg.runtime.backends`) and a
live PyTorch model behind :class:`lvg.modeling.runner.ArrayRunner` are an :class:`ArrayModel`: evaluation
(:func:`lvg.train.evaluate.evaluate`) scores any of them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from lvg.config import ModelConfig

__all__ = ["ArrayModel", "ModelOutput"]


@dataclass(frozen=True)
class ModelOutput:
    """Raw model outputs for a batch of B samples, over the letterbox canvas.

    Attributes:
        prob: float32 (B, h, w) probability map (Eq. 9: the mean of the expressions' maps).
        no_target_logit: float32 (B,) GRES no-target logits; ``None`` for RIS models.
        expression_prob: float32 (B, 1 + N, h, w) each expression's own map (input expression first), when
            asked of a model that has them (the PyTorch model; an export holds only ``prob``); else ``None``.
        attention: float32 (B, 1 + N, g, g) per-expression attention maps (the PyTorch model only, on
            request); else ``None``.
    """

    prob: np.ndarray
    no_target_logit: np.ndarray | None = None
    expression_prob: np.ndarray | None = None
    attention: np.ndarray | None = None


class ArrayModel(Protocol):
    """A model that runs preprocessed numpy batches of any size."""

    @property
    def config(self) -> ModelConfig:
        """The model's config (preprocessing included)."""

    @property
    def supports_expressions(self) -> bool:
        """Whether ``run_arrays(..., return_expressions=True)`` gives ``expression_prob``."""

    def run_arrays(self, images: np.ndarray, text_ids: np.ndarray, text_mask: np.ndarray, *,
                   return_expressions: bool = False) -> ModelOutput:
        """The model on a batch of any size (see the module docstring for the inputs)."""
