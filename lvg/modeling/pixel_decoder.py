"""Visual feature map (Figure 2: the "upsampled visual feature map" F^V feeding the prediction).

A simple feature pyramid over the patch tokens of several encoder layers (4, 6, 8, 12 for base), fused at
the patch scale (1/16), then stride-2 deconvolutions up to 1/4 scale and a projection to the class-token
embedding dimension.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lvg.config import EncoderConfig, HeadConfig


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


class PixelDecoder(nn.Module):
    """Patch tokens of the pyramid layers -> feature map ``(B, E, H/4, W/4)``."""

    def __init__(self, head: HeadConfig, enc: EncoderConfig) -> None:
        super().__init__()
        d, c, levels = enc.embed_dim, head.neck_dim, len(head.pyramid_layers)
        self.grid = enc.grid
        self.level_norms = nn.ModuleList(nn.LayerNorm(d, eps=enc.layernorm_eps) for _ in range(levels))
        self.lateral = nn.ModuleList(nn.Conv2d(d, c, 1) for _ in range(levels))
        k = head.fuse_kernel
        self.fuse = nn.Sequential(nn.Conv2d(c * levels, c, k, padding=k // 2, bias=False), _norm(c), nn.GELU())
        steps = int(math.log2(enc.patch_size // 4))  # 2 for patch 16: 1/16 -> 1/8 -> 1/4
        ups: list[nn.Module] = []
        for i in range(steps):
            ups.append(nn.ConvTranspose2d(c, c, 2, stride=2))
            if i < steps - 1:
                ups += [_norm(c), nn.GELU()]
        self.upsample = nn.Sequential(*ups)
        self.proj = nn.Conv2d(c, head.embed_dim, 1)

    def forward(self, levels: list[Tensor]) -> Tensor:
        """levels: one ``(B, n, d)`` patch-token tensor per pyramid layer."""
        maps = []
        for x, norm, lateral in zip(levels, self.level_norms, self.lateral):
            b, n, d = x.shape
            x = norm(x).transpose(1, 2).reshape(b, d, self.grid, self.grid)  # (B, n, d) -> (B, d, g, g)
            maps.append(lateral(x))
        x = self.fuse(torch.cat(maps, dim=1))  # (B, c, g, g)
        return self.proj(self.upsample(x))  # (B, E, 4g', 4g') = (B, E, H/4, W/4)
