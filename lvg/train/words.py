"""Auxiliary training signals that make the expression embedding ``t_o`` carry the sentence's words: its
direction word and the target's attribute words.

A grounding model trained on masks alone can learn to read the head noun phrase of "the leftmost green star"
and ignore "leftmost": its mask then covers every green star, and the mask loss gives the direction word
only a weak, indirect gradient. With ``loss_direction > 0`` a linear classifier reads the input
expression's embedding ``t_o`` (the ``text_embedding`` output, the vector every pixel feature is dotted with)
and is trained to name the sentence's first direction word, so that ``t_o`` has to hold it. The mask loss
decides what the pixels do with it. The label comes from the words alone, so any dataset has it: 0 = no
direction word, else 1 + the index in :data:`DIRECTIONS` of the first one ("the man on the left" -> left,
"the cup above the plate" -> up).

Pulled toward the direction word, ``t_o`` can lose the others (MODEL_CARD.md, "What was tried"). With
``loss_attribute_words > 0`` one more linear classifier per group of :data:`ATTRIBUTE_WORDS` (colour, shape,
size, texture) names the group's value in the target's phrase, so ``t_o`` has to keep those too. The
target's phrase is the sentence up to its relation ("the red circle left of the blue square" -> "the red
circle"), so the reference object's words are not asked for.

The same net carries the one auxiliary classifier that reads the image side: with ``loss_patch_shape > 0``,
a linear map from each of the encoder's last-layer patch tokens (or, with ``patch_shape_from = "branch"``,
the shape branch's features) to the shape of the object on it (:mod:`lvg.train.patch_labels`; object
patches only), so that a shape word has something to select.

Only training uses the classifiers; no exported model has them.
"""

from __future__ import annotations

import re
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from lvg.errors import ConfigError
from lvg.train.patch_labels import IGNORE
from lvg.train.synth.language import head_description
from lvg.train.synth.objects import COLOURS, SHAPES, SIZES, TEXTURES

__all__ = ["ATTRIBUTE_WORDS", "DIRECTIONS", "WordsNet", "attribute_classes", "direction_class", "words_net",
           "word_loss", "with_word_losses"]

#: The direction classes after "none" (label 0).
DIRECTIONS = ("left", "right", "up", "down")

# One group per class of DIRECTIONS, in order: the match's lastindex is the label.
_DIRECTION_WORDS = re.compile(
    r"\b(?:(left\w*)|(right\w*)|(top\w*|above|upper\w*)|(bottom\w*|below|under|beneath|lower\w*))\b"
)


#: The attribute groups and their classes after "none" (label 0): the synthetic world's vocabularies
#: (:mod:`lvg.train.synth.objects`). Another dataset's sentences mostly get "none", which is still a label.
ATTRIBUTE_WORDS: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS), "shape": SHAPES, "size": SIZES, "texture": TEXTURES,
}


#: The column of ``attribute_classes``' labels that names the shape.
_SHAPE_GROUP = list(ATTRIBUTE_WORDS).index("shape")


def attribute_classes(text: str) -> tuple[int, ...]:
    """The attribute labels of ``text``, one per group of :data:`ATTRIBUTE_WORDS` in its order: 0 when the
    target's phrase names no value of the group, else 1 + the index of the value its first such word names
    (:func:`lvg.train.synth.head_description`: "the big red circle left of the blue square" -> large, red,
    circle)."""
    head = head_description(text)
    return tuple(1 + values.index(head[group]) if group in head else 0 for group, values in ATTRIBUTE_WORDS.items())


def direction_class(text: str) -> int:
    """The direction label of ``text``: 0 when it has no direction word, else 1 + the index in
    :data:`DIRECTIONS` of its first one (case-insensitive, whole words)."""
    match = _DIRECTION_WORDS.search(text.lower())
    return 0 if match is None else int(match.lastindex or 0)


#: ``TrainConfig.patch_shape_from`` -> the model output the per-patch shape classifier reads, ``(B, n, width)``.
PATCH_SHAPE_FEATURES = {"tokens": "patch_tokens", "branch": "shape_grid"}


class WordsNet(nn.Module):
    """A Latent-VG model (shared, not copied) with classifiers on its input expression's embedding: with
    ``direction``, the direction classifier; with ``attribute_words``, one per group of :data:`ATTRIBUTE_WORDS`.

    ``forward(image, text_ids, text_mask)`` returns the model's outputs plus ``direction_logits``
    ``(B, 1 + len(DIRECTIONS))`` and ``<group>_logits`` ``(B, 1 + classes)`` for the classifiers it has. Only
    classifiers with a loss are built: DDP refuses parameters that get no gradient.
    """

    #: Where a checkpoint keeps the classifiers (:func:`lvg.train.state.heads_tensors`); the name predates
    #: the attribute classifiers and stays so that runs saved before them resume.
    checkpoint_prefix = "train/direction_head/"

    def __init__(self, model: nn.Module, *, direction: bool = True, attribute_words: bool = False,
                 latent_direction: bool = False, patch_shape: bool = False,
                 patch_shape_from: str = "tokens") -> None:
        super().__init__()
        self.model = model
        self.latent_direction = latent_direction
        if latent_direction and not model.cfg.latent.enabled:  # type: ignore[union-attr]
            raise ConfigError(f"loss_direction_latent needs latent expressions; {model.cfg.name} has none")
        dim = model.cfg.head.embed_dim  # type: ignore[union-attr]
        # One classifier for t_o and the latents: they meet F^V in the same dot product (Eq. 9), so the
        # direction should be legible along the same axes in all of them.
        self.classifier = nn.Linear(dim, 1 + len(DIRECTIONS)) if direction or latent_direction else None
        self.attribute_classifiers = nn.ModuleDict(
            {g: nn.Linear(dim, 1 + len(c)) for g, c in ATTRIBUTE_WORDS.items()} if attribute_words else {})
        self.patch_shape_key = ""
        self.patch_shape_classifier: nn.Linear | None = None
        if patch_shape:
            self.patch_shape_key = PATCH_SHAPE_FEATURES.get(patch_shape_from, "")
            if not self.patch_shape_key:
                raise ConfigError(f"patch_shape_from must be 'tokens' or 'branch', got {patch_shape_from!r}")
            width = model.cfg.encoder.embed_dim  # type: ignore[union-attr]
            if patch_shape_from == "branch":
                if model.shape_branch is None:  # type: ignore[union-attr]
                    raise ConfigError(f"patch_shape_from = 'branch' reads the shape branch; {model.cfg.name} has none")
                width = model.shape_branch.channels  # type: ignore[union-attr]
            # With the shape match the model has this classifier itself (its ``patch_shape_logits``): the loss
            # trains the one whose outputs the maps read.
            own = patch_shape_from == "branch" and getattr(model, "shape_match", None) is not None
            if own and model.cfg.head.shape_match != len(SHAPES):  # type: ignore[union-attr]
                raise ConfigError(f"head.shape_match names {model.cfg.head.shape_match} shapes; the synthetic "  # type: ignore[union-attr]
                                  f"data's labels name {len(SHAPES)}")
            # Linear on purpose: the masks are dot products, so shape must be linearly legible in the features.
            self.patch_shape_classifier = None if own else nn.Linear(width, len(SHAPES))
            self.patch_shape_key = "" if own else self.patch_shape_key

    def heads(self) -> dict[str, Tensor]:
        """The classifiers' weights (what a checkpoint keeps besides the model's)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("model.")}

    def forward(self, image: Tensor, text_ids: Tensor, text_mask: Tensor) -> dict[str, Tensor]:
        out = self.model(image, text_ids, text_mask)
        t_o = out["text_embedding"]
        logits = {f"{g}_logits": head(t_o) for g, head in self.attribute_classifiers.items()}
        if self.classifier is not None:
            logits["direction_logits"] = self.classifier(t_o)
        if self.latent_direction:
            logits["latent_direction_logits"] = self.classifier(out["latent_embeddings"])  # (B, N, 1 + dirs)
        if self.patch_shape_classifier is not None:
            logits["patch_shape_logits"] = self.patch_shape_classifier(out[self.patch_shape_key])  # (B, n, shapes)
        return {**out, **logits}


def words_net(model: nn.Module, cfg: Any) -> WordsNet | None:
    """The classifiers a grounding run of :class:`~lvg.train.config.TrainConfig` ``cfg`` trains beside
    ``model`` (None when none of its word or patch losses is on)."""
    if max(cfg.loss_direction, cfg.loss_attribute_words, cfg.loss_direction_latent, cfg.loss_patch_shape,
           cfg.loss_shape_word) <= 0:
        return None
    return WordsNet(model, direction=cfg.loss_direction > 0, attribute_words=cfg.loss_attribute_words > 0,
                    latent_direction=cfg.loss_direction_latent > 0, patch_shape=cfg.loss_patch_shape > 0,
                    patch_shape_from=cfg.patch_shape_from)


def word_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of one classifier's ``logits`` ``(B, 1 + classes)`` against ``labels`` ``(B,)`` int64, in
    float32."""
    return F.cross_entropy(logits.float(), labels)


def with_word_losses(parts: dict[str, Tensor], outputs: dict[str, Tensor], batch: dict[str, Any],
                     weight: float, attribute_weight: float = 0.0,
                     latent_weight: float = 0.0, *, patch_shape_weight: float = 0.0,
                     shape_word_weight: float = 0.0) -> dict[str, Tensor]:
    """The grounding loss ``parts`` plus, at ``weight`` > 0, ``"direction"`` (:func:`word_loss` of
    :class:`WordsNet`'s outputs against ``batch["direction"]``) and, at ``attribute_weight`` > 0,
    ``"attribute_words"`` (the mean over the groups of the same cross-entropy against ``batch["attributes"]``
    ``(B, len(ATTRIBUTE_WORDS))``) and, at ``latent_weight`` > 0, ``"latent_direction"`` (the direction
    cross-entropy of every latent embedding ``z_o^i``, averaged), and, at ``patch_shape_weight > 0``,
    ``"patch_shape"`` (the cross-entropy of ``patch_shape_logits`` ``(B, n, shapes)`` against
    ``batch["patch_shape"]`` ``(B, n)``, averaged over the object patches), and, at ``shape_word_weight > 0``,
    ``"shape_word"`` (the cross-entropy of the model's ``shape_word_logits`` against the shape column of
    ``batch["attributes"]``), each added to ``"total"`` at its weight.

    Raises:
        ConfigError: the batch lacks the labels (a dataset other than :mod:`lvg.train.torch_data`'s).
    """
    wanted = [(key, w) for key, w in (("direction", max(weight, latent_weight)),
                                      ("attributes", max(attribute_weight, shape_word_weight))) if w > 0]
    if any(key not in batch for key, _ in wanted):
        raise ConfigError("loss_direction and loss_attribute_words need each sample's word labels, which the "
                          "datasets of lvg.train.torch_data give; this run's data has none")
    if patch_shape_weight > 0 and "patch_shape" not in batch:
        raise ConfigError("loss_patch_shape needs each image's patch labels, which lvg.train.torch_data gives "
                          "for synthetic data when asked (lvg.train.run_data.build_data)")
    out = dict(parts)
    if latent_weight > 0:
        logits = outputs["latent_direction_logits"]  # (B, N, C)
        b, n, c = logits.shape
        labels = batch["direction"][:, None].expand(b, n)  # (B, N): each latent, the sentence's label
        out["latent_direction"] = word_loss(logits.reshape(b * n, c), labels.reshape(b * n))
        out["total"] = out["total"] + latent_weight * out["latent_direction"]
    if weight > 0:
        out["direction"] = word_loss(outputs["direction_logits"], batch["direction"])
        out["total"] = out["total"] + weight * out["direction"]
    if attribute_weight > 0:
        labels = batch["attributes"]  # (B, groups)
        out["attribute_words"] = sum(word_loss(outputs[f"{g}_logits"], labels[:, i])
                                     for i, g in enumerate(ATTRIBUTE_WORDS)) / len(ATTRIBUTE_WORDS)
        out["total"] = out["total"] + attribute_weight * out["attribute_words"]
    if shape_word_weight > 0:
        if "shape_word_logits" not in outputs:
            raise ConfigError("loss_shape_word trains the shape match's word classifier: the variant needs "
                              "head.shape_match")
        out["shape_word"] = word_loss(outputs["shape_word_logits"], batch["attributes"][:, _SHAPE_GROUP])
        out["total"] = out["total"] + shape_word_weight * out["shape_word"]
    if patch_shape_weight > 0:
        logits = outputs["patch_shape_logits"].float()  # (B, n, shapes)
        labels = batch["patch_shape"]  # (B, n): IGNORE on background
        if bool((labels >= 0).any()):
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)
        else:  # no object patch in the batch: a zero that still reaches the classifier (DDP wants a gradient)
            ce = logits.sum() * 0.0
        out["patch_shape"] = ce
        out["total"] = out["total"] + patch_shape_weight * ce
    return out
