"""A convolutional branch from the image to the patch grid whose features join ``F^V``
(``HeadConfig.shape_branch``).

Not in the paper. Trained from scratch on synthetic scenes at patch 32, the encoder's patch tokens learn an
object's colour and texture but not its outline: a linear probe reads shape from them no better than
always naming the most frequent shape, even with a shape classifier on them (``MODEL_CARD.md``), while
convolutions over the pixels learn it from the same images within a few hundred steps. A shape word can only
select what ``F^V`` holds, so this box puts those convolutions' features there: stride-2 3x3 convolutions
from the image down to the patch grid (channels doubling up to ``channels``), then a 1x1 projection to the
pixel decoder's width, added to its 1/8-scale features upsampled bilinearly
(:meth:`lvg.modeling.pixel_decoder.PixelDecoder.features`). The projection starts at zero, so a model grown
from weights without the branch starts with their function, and the branch reads the image on its own (not
the decoder's stem), so training it changes nothing else. What gives its features their content is a
training-time classifier of the object's shape on them (``TrainConfig.patch_shape_from = "branch"``).

With ``HeadConfig.shape_branch_tokens`` the same features are also added to the patch tokens (another
projection starting at zero), so the encoder, where an expression's words meet the patches, can match a shape
word the way it matches a colour word.

With ``HeadConfig.shape_branch_context`` the patch-grid features pass through that many residual blocks of a
depthwise 5x5 and a pointwise convolution at the patch grid: the stride-2 stack sees about 63 pixels around a
patch's centre, less than a large object, so a patch inside one sees no outline; each block widens that by 128
pixels (what it buys: ``MODEL_CARD.md``). The pointwise convolution starts at zero, so a branch grown with the
blocks starts with its function. Depthwise keeps each block at 3.6k parameters (48 channels), inside the bundled
file's 30 MB.

With ``HeadConfig.shape_branch_logits`` each expression's embedding also weighs the branch's patch-grid features
directly: a linear map from the embedding to one weight per branch channel, starting at zero, gives a logit per
patch, upsampled bilinearly and added to that expression's map: a shape word can select the branch's shape
features without passing through the pixel decoder, which carries them from its 1/8 scale to the map's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lvg.modeling.encoder import zero_start
from lvg.modeling.pixel_decoder import group_norm


class ShapeBranch(nn.Module):
    """``(B, 3, S, S)`` normalised image -> :meth:`grid` ``(B, channels, g, g)`` -> :meth:`map_features`
    ``(B, c, g, g)`` additions to the pixel decoder's features (``g = S / patch_size``)."""

    def __init__(self, channels: int, patch_size: int, map_channels: int, token_dim: int = 0, context: int = 0,
                 embed_dim: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        halvings = int(math.log2(patch_size))
        for k in range(halvings):
            # Channels double with each halving from channels / 2**(halvings-2), so the first convolutions, at
            # the largest scales, stay cheap and the last ones, whose receptive field spans an object, are widest.
            out = max(channels >> max(halvings - 2 - k, 0), 8)
            layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), group_norm(out), nn.GELU()]
            c = out
        self.down = nn.Sequential(*layers)
        self.channels = c
        self.context = nn.ModuleList(_ContextBlock(c) for _ in range(context))
        self.to_words: nn.Linear | None = None
        if embed_dim:
            self.to_words = zero_start(nn.Linear(embed_dim, c))
        self.to_map = zero_start(nn.Conv2d(c, map_channels, 1))
        self.to_tokens: nn.Conv2d | None = None
        if token_dim:
            self.to_tokens = zero_start(nn.Conv2d(c, token_dim, 1))

    def grid(self, image: Tensor) -> Tensor:
        """The normalised image ``(B, 3, S, S)`` -> patch-grid features ``(B, channels, g, g)``."""
        x = self.down(image)  # (B, channels, g, g)
        for block in self.context:
            x = x + block(x)  # residual: a block whose last convolution is zero leaves the features as they are
        return x

    def map_features(self, grid: Tensor) -> Tensor:
        """:meth:`grid`'s features -> ``(B, c, g, g)``, added to the pixel decoder's 1/8-scale features."""
        return self.to_map(grid)

    def logits(self, grid: Tensor, emb: Tensor, size: tuple[int, int]) -> Tensor:
        """:meth:`grid`'s features ``(B, w, g, g)`` weighed by each expression's embedding ``emb`` ``(B, 1+N, E)``
        -> logits ``(B, 1+N, *size)`` added to the maps (``shape_branch_logits``)."""
        if self.to_words is None:
            raise ValueError("this shape branch adds no logits (head.shape_branch_logits is off)")
        weights = self.to_words(emb)  # (B, 1+N, w)
        # Per patch first, then upsampled: both are linear, and the grid is 256x smaller than the map.
        per_patch = torch.einsum("bwgh,bnw->bngh", grid, weights)  # (B, 1+N, g, g)
        return F.interpolate(per_patch, size=size, mode="bilinear", align_corners=False)

    def tokens(self, grid: Tensor) -> Tensor:
        """:meth:`grid`'s features -> ``(B, g*g, d)`` additions to the patch tokens (``shape_branch_tokens``)."""
        if self.to_tokens is None:
            raise ValueError("this shape branch feeds no tokens (head.shape_branch_tokens is off)")
        return self.to_tokens(grid).flatten(2).transpose(1, 2)  # (B, d, g, g) -> (B, g*g, d)


class _ContextBlock(nn.Module):
    """``(B, c, g, g)`` -> ``(B, c, g, g)``: a depthwise 5x5 convolution (each channel over 5 x 5 patches), GELU,
    and a pointwise convolution that starts at zero."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.spread = nn.Conv2d(channels, channels, 5, padding=2, groups=channels)
        self.mix = zero_start(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.mix(F.gelu(self.spread(x)))
