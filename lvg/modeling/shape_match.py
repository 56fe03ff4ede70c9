"""Whether each patch shows the shape the sentence names, as a term added to every map
(``HeadConfig.shape_match``).

Not in the paper. On synthetic scenes nearly every wrong pick lands on an object of another shape
(``MODEL_CARD.md``), while the shape branch's classifier names an object's shape well and the shape word is in
the sentence; what fails is the dot product ``F^V . e`` carrying the match from one to the other: the expression
embedding holds the shape word poorly (a linear read-out names it for 38% of held-out sentences that have one)
and the branch's share of ``F^V`` is small. This box makes the match explicit, with two small classifiers whose
outputs have a meaning:

- the sentence: each text token (as embedded, before the encoder) scores "no shape word" or one of the shapes,
  and an attention over the tokens picks the token that names the target's shape (the first shape word of
  "the circle left of the blue square"), giving ``q`` ``(B, 1 + S)``;
- each patch: the shape branch's patch-grid features name the shape of the object on it, ``P`` ``(B, n, S)``
  (trained by the per-patch shape loss, ``TrainConfig.loss_patch_shape`` with ``patch_shape_from = "branch"``);

and ``match = q_none + sum_s q_s P_s``, the probability that the patch's shape is the named one (1 when the
sentence names none). ``gain * log(match + EPS)``, upsampled to the map, is added to every expression's map:
it lowers the objects whose shape disagrees and leaves the rest. The gain starts at zero, so a model grown from
weights without the box starts with their function.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

#: Floor of the match inside the logarithm: the term's lowest value is ``gain * log(EPS)``.
EPS = 0.01
#: The gain is this times a parameter that starts at zero. The maps' logits spread over tens of units (std
#: ~18 on held-out scenes, median ~-50), and Adam moves a parameter by about the learning rate per step, so a
#: plain gain would stay under 0.3 for a schedule of 1,000 steps at 3e-4 and could not re-rank a pick.
GAIN_SCALE = 30.0


class ShapeMatch(nn.Module):
    """Embedded text tokens ``(B, L, d)`` + the shape branch's grid ``(B, w, g, g)`` -> a term ``(B, 1, h, w)``
    added to every map; ``shapes`` is the number of shape classes ``S``."""

    def __init__(self, token_dim: int, branch_channels: int, shapes: int) -> None:
        super().__init__()
        self.word = nn.Linear(token_dim, 1 + shapes)  # per token: 0 = no shape word, else 1 + the shape
        self.focus = nn.Linear(token_dim, 1)  # which token names the target's shape
        self.patch = nn.Linear(branch_channels, shapes)
        self.gain = nn.Parameter(torch.zeros(()))

    def word_logits(self, tokens: Tensor, text_mask: Tensor) -> Tensor:
        """Embedded text tokens ``(B, L, d)`` (position 0 the class token) and their mask ``(B, L)`` -> the
        sentence's shape-word logits ``(B, 1 + S)``: the tokens' scores pooled by the focus attention."""
        valid = text_mask.bool().clone()
        valid[:, 0] = False  # the class token is no word
        focus = self.focus(tokens)[..., 0].float().masked_fill(~valid, float("-inf"))  # (B, L)
        weights = torch.softmax(focus, dim=-1).nan_to_num(0.0)  # a sentence without words: all zero
        return torch.einsum("bl,blc->bc", weights, self.word(tokens).float())  # (B, 1 + S)

    def patch_logits(self, grid: Tensor) -> Tensor:
        """The branch's grid ``(B, w, g, g)`` -> per-patch shape logits ``(B, g*g, S)`` in raster order."""
        return self.patch(grid.flatten(2).transpose(1, 2)).float()  # (B, w, g, g) -> (B, n, w) -> (B, n, S)

    def forward(self, word_logits: Tensor, patch_logits: Tensor, grid: tuple[int, int],
                size: tuple[int, int]) -> Tensor:
        """:meth:`word_logits` ``(B, 1 + S)`` and :meth:`patch_logits` ``(B, n, S)`` on a patch grid of ``grid``
        ``(g, g)`` -> the term ``(B, 1, *size)``, the same for every expression of a sentence."""
        q = torch.softmax(word_logits, dim=-1)  # (B, 1 + S)
        p = torch.softmax(patch_logits, dim=-1)  # (B, n, S)
        match = q[:, None, 0] + (p * q[:, None, 1:]).sum(-1)  # (B, n)
        term = torch.log(match + EPS).reshape(-1, 1, *grid)  # (B, n) -> (B, 1, g, g): raster order
        # Bilinear, as every patch-grid term: an object's shape is smooth across it.
        term = F.interpolate(term, size=size, mode="bilinear", align_corners=False)
        # The gain multiplies last and alone: an exporter folds ``GAIN_SCALE * gain`` into one constant, and
        # lvg.export.recover then finds no initializer holding the gain itself.
        return self.gain * (GAIN_SCALE * term)
