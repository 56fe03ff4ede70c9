"""An auxiliary training signal that makes the expression embedding carry the sentence's direction word.

A grounding model trained on masks alone can learn to read the head noun phrase of "the leftmost green star"
and ignore "leftmost": its mask then covers every green star, and the mask loss gives the direction word
only a weak, indirect gradient. With ``loss_direction > 0`` a linear classifier reads the input
expression's embedding ``t_o`` (the ``text_embedding`` output, the vector every pixel feature is dotted with)
and is trained to name the sentence's first direction word, so that ``t_o`` has to hold it. The mask loss
decides what the pixels do with it.

The label comes from the words alone, so any dataset has it: 0 = no direction word, else 1 + the index in
:data:`DIRECTIONS` of the first one ("the man on the left" -> left, "the cup above the plate" -> up). Only
training uses the classifier; no exported model has it.
"""

from __future__ import annotations

import re
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from lvg.errors import ConfigError

__all__ = ["DIRECTIONS", "DirectionNet", "direction_class", "direction_loss", "with_direction_loss"]

#: The direction classes after "none" (label 0).
DIRECTIONS = ("left", "right", "up", "down")

# One group per class of DIRECTIONS, in order: the match's lastindex is the label.
_DIRECTION_WORDS = re.compile(
    r"\b(?:(left\w*)|(right\w*)|(top\w*|above|upper\w*)|(bottom\w*|below|under|beneath|lower\w*))\b"
)


def direction_class(text: str) -> int:
    """The direction label of ``text``: 0 when it has no direction word, else 1 + the index in
    :data:`DIRECTIONS` of its first one (case-insensitive, whole words)."""
    match = _DIRECTION_WORDS.search(text.lower())
    return 0 if match is None else int(match.lastindex or 0)


class DirectionNet(nn.Module):
    """A Latent-VG model (shared, not copied) with the direction classifier on its input expression's
    embedding.

    ``forward(image, text_ids, text_mask)`` returns the model's outputs plus ``direction_logits``
    ``(B, 1 + len(DIRECTIONS))``.
    """

    #: Where a checkpoint keeps the classifier (:func:`lvg.train.state.heads_tensors`).
    checkpoint_prefix = "train/direction_head/"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.classifier = nn.Linear(model.cfg.head.embed_dim, 1 + len(DIRECTIONS))  # type: ignore[union-attr]

    def heads(self) -> dict[str, Tensor]:
        """The classifier's weights (what a checkpoint keeps besides the model's)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("model.")}

    def forward(self, image: Tensor, text_ids: Tensor, text_mask: Tensor) -> dict[str, Tensor]:
        out = self.model(image, text_ids, text_mask)
        return {**out, "direction_logits": self.classifier(out["text_embedding"])}


def direction_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of ``logits`` ``(B, 1 + len(DIRECTIONS))`` against ``labels`` ``(B,)`` int64, in float32."""
    return F.cross_entropy(logits.float(), labels)


def with_direction_loss(parts: dict[str, Tensor], outputs: dict[str, Tensor], batch: dict[str, Any],
                        weight: float) -> dict[str, Tensor]:
    """The grounding loss ``parts`` plus ``"direction"`` (:func:`direction_loss` of :class:`DirectionNet`'s
    outputs against ``batch["direction"]``), added to ``"total"`` at ``weight``.

    Raises:
        ConfigError: the batch has no direction labels (a dataset other than :mod:`lvg.train.torch_data`'s).
    """
    if "direction" not in batch:
        raise ConfigError("loss_direction needs each sample's direction label, which the datasets of "
                          "lvg.train.torch_data give; this run's data has none")
    ce = direction_loss(outputs["direction_logits"], batch["direction"])
    return {**parts, "direction": ce, "total": parts["total"] + weight * ce}
