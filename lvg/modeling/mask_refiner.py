"""A small convolutional refiner of each expression's logit map (``HeadConfig.mask_refine``).

Not in the paper. There ``F^V . e_j`` is linear in ``F^V`` per pixel, and ``F^V`` at the map's scale is an
upsampled coarse map plus (with ``HeadConfig.image_stem``) a linear read of the stem's local features: a
pixel can be pulled towards the sentence's colour, but nothing decides where the object the coarse map chose
ends. On synthetic scenes at patch 32, half the wrong pixels of a right pick lie next to its edge
(``benchmarks/bench_synth_kinds.py``). This box reads each expression's logit map together with the stem's
features and adds a correction: three 3x3 convolutions at the map's scale (the middle one dilated, so it
sees 9 cells, 18 input pixels at 1/2 scale), the last starting at zero so a model grown from weights
without it starts with their function.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from lvg.modeling.encoder import zero_start


class MaskRefiner(nn.Module):
    """``(B, J, h, w)`` logits and ``(B, s, h, w)`` stem features -> ``(B, J, h, w)`` logit corrections."""

    def __init__(self, stem_channels: int, hidden: int) -> None:
        super().__init__()
        # The first convolution over [logit_j, stem] is split in two: the stem's part is the same for every
        # expression and runs once per image, the logit's part once per expression.
        self.from_pixels = nn.Conv2d(stem_channels, hidden, 3, padding=1)
        self.from_logit = nn.Conv2d(1, hidden, 3, padding=1, bias=False)
        self.mid = nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2)
        self.out = zero_start(nn.Conv2d(hidden, 1, 3, padding=1))

    def forward(self, logits: Tensor, pixels: Tensor) -> Tensor:
        b, j, h, w = logits.shape
        a = self.from_pixels(pixels.to(logits.dtype))  # (B, r, h, w)
        lg = self.from_logit(logits.reshape(b * j, 1, h, w))  # (B, J, h, w) -> (B*J, r, h, w)
        r = lg.shape[1]
        x = F.gelu(lg.reshape(b, j, r, h, w) + a[:, None])  # (B, J, r, h, w): the stem's part per expression
        x = F.gelu(self.mid(x.reshape(b * j, r, h, w)))  # (B*J, r, h, w)
        return self.out(x).reshape(b, j, h, w)  # (B*J, 1, h, w) -> (B, J, h, w)
