"""The image stem's features as an addition to the patch tokens (``HeadConfig.stem_tokens``).

Not in the paper: its encoder reads each patch through one linear map (BEiT-3's patch embedding), which
pretraining on real images makes sufficient. Trained on synthetic scenes without that pretraining, at patch
32, an object straddles two or three patches and which object a sentence names is decided from those
tokens. This box takes the decoder's stem features (``PixelDecoder.pixels``, computed once for both, at
1/4 or 1/2 scale: ``head.map_stride``) down to the patch grid with stride-2 convolutions and adds them to
the patch tokens through a 1x1 projection that starts at zero, so a model grown from weights without it
starts with their function.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from lvg.modeling.encoder import zero_start
from lvg.modeling.pixel_decoder import group_norm


class StemTokens(nn.Module):
    """``(B, s, S/m, S/m)`` stem features (``m = stem_stride``) -> ``(B, n, d)`` additions to the ``n`` patch
    tokens."""

    def __init__(self, stem_channels: int, patch_size: int, embed_dim: int, stem_stride: int = 4,
                 width: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, width = stem_channels, width or embed_dim
        for _ in range(int(math.log2(patch_size // stem_stride))):  # 1/m -> 1/patch, one halving per convolution
            # Channels double with each halving (up to ``width``) so each step keeps its FLOPs.
            out = min(2 * c, width)
            layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), group_norm(out), nn.GELU()]
            c = out
        self.down = nn.Sequential(*layers)
        self.proj = zero_start(nn.Conv2d(c, embed_dim, 1))

    def forward(self, pixels: Tensor) -> Tensor:
        return self.proj(self.down(pixels)).flatten(2).transpose(1, 2)  # (B, d, g, g) -> (B, g*g, d)
