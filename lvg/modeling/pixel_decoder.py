"""Visual feature map (Figure 2: the "upsampled visual feature map" F^V feeding the prediction).

A simple feature pyramid over the patch tokens of several encoder layers (4, 6, 8, 12 for base), fused at
the patch scale (1/16), then stride-2 deconvolutions up to 1/4 scale and a projection to the class-token
embedding dimension. Optional additions to that map: where each pixel is (``HeadConfig.pixel_positions``) and
the image's own 1/4-scale features from a shallow convolutional stem (``HeadConfig.image_stem``); with
``HeadConfig.map_stride = 2`` the map is upsampled to 1/2 scale and the stem's features join it there.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lvg.config import EncoderConfig, HeadConfig
from lvg.modeling.encoder import zero_start


def group_norm(channels: int) -> nn.GroupNorm:
    """The decoder's normalisation: GroupNorm with up to 32 groups that divide ``channels``."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


#: Channels of :func:`position_table`: x and y, and the sine and cosine of each at three frequencies.
POSITION_CHANNELS = 14


def position_table(side: int) -> Tensor:
    """Where each cell of a ``side x side`` map is: float32 ``(1, 14, side, side)``.

    Channels: ``x``, ``y`` (cell centres, -1 at the left / top edge to 1 at the right / bottom), then
    ``sin(f pi x), cos(f pi x), sin(f pi y), cos(f pi y)`` for ``f`` in 1, 2, 4. The linear terms let a
    mask prefer the left or the top of the image; the periodic ones, bands and finer places.
    """
    u = (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2 - 1  # (side,) cell centres in (-1, 1)
    y, x = torch.meshgrid(u, u, indexing="ij")  # (side, side) each
    terms = [x, y]
    for f in (1, 2, 4):
        terms += [torch.sin(f * math.pi * x), torch.cos(f * math.pi * x),
                  torch.sin(f * math.pi * y), torch.cos(f * math.pi * y)]
    return torch.stack(terms)[None]  # (1, 14, side, side)


class PixelDecoder(nn.Module):
    """Patch tokens of the pyramid layers + class-token embeddings -> per-expression logit maps.

    Architecturally the decoder builds ``F^V = proj(deconv(...))`` of shape ``(B, E, H/4, W/4)`` (brought to
    ``H/m`` when ``head.map_stride`` is 2, see ``_to_map_scale``) and the logits are ``F^V . e_j``. The last
    deconvolution and the 1x1 projection are linear and followed only by that dot product, so we fold both
    into each class embedding instead: ``e_j -> W_proj^T e_j -> W_deconv u_j`` gives one ``(c, 2, 2)`` filter
    per expression, applied to the 1/8-scale features.
    Same parameters, same function (up to float rounding), but the two largest full-resolution layers
    (34 GFLOPs for lvg-b) are never materialised.
    """

    def __init__(self, head: HeadConfig, enc: EncoderConfig) -> None:
        super().__init__()
        d, c, levels = enc.embed_dim, head.neck_dim, len(head.pyramid_layers)
        self.grid = enc.grid
        self.level_norms = nn.ModuleList(nn.LayerNorm(d, eps=enc.layernorm_eps) for _ in range(levels))
        self.lateral = nn.ModuleList(nn.Conv2d(d, c, 1) for _ in range(levels))
        k = head.fuse_kernel
        self.fuse = nn.Sequential(nn.Conv2d(c * levels, c, k, padding=k // 2, bias=False), group_norm(c), nn.GELU())
        steps = int(math.log2(enc.patch_size // 4))  # 2 for patch 16: 1/16 -> 1/8 -> 1/4
        ups: list[nn.Module] = []
        for _ in range(steps - 1):
            ups += [nn.ConvTranspose2d(c, c, 2, stride=2), group_norm(c), nn.GELU()]
        self.upsample = nn.Sequential(*ups)
        self.last = nn.ConvTranspose2d(c, c, 2, stride=2)  # the final stride-2 step, folded (see above)
        self.proj = nn.Conv2d(c, head.embed_dim, 1)
        self.positions: nn.Conv2d | None = None
        if head.pixel_positions:
            side = self.grid * 2 ** (steps - 1)  # the 1/8-scale side that `last` reads
            # A constant of the architecture, not a weight: rebuilt here, exported as a constant.
            self.register_buffer("position_table", position_table(side), persistent=False)
            # PyTorch's default initialisation, not zero: the position term only helps once an expression's
            # embedding tells "left" from "right", and from zero neither that difference nor the position
            # weights get a gradient (a saddle: 1,000 steps from zero moved the weights to 0.0025 and
            # changed nothing).
            self.positions = nn.Conv2d(POSITION_CHANNELS, c, 1)
        self.stem: nn.Sequential | None = None
        self.stem_proj: nn.Conv2d | None = None
        self.map_stride = head.map_stride
        if head.image_stem:
            s = head.image_stem
            # At map stride 2 the second convolution keeps 1/2 scale: the same weights, evaluated at every
            # position rather than every other one, so a stride-4 run's stem transfers as it is.
            second = 2 if head.map_stride == 4 else 1
            self.stem = nn.Sequential(nn.Conv2d(3, s, 3, stride=2, padding=1), group_norm(s), nn.GELU(),
                                      nn.Conv2d(s, s, 3, stride=second, padding=1), group_norm(s), nn.GELU())
            # Zero: a model grown from weights without the stem starts with their function. Not a saddle (unlike
            # the position term's): the projection's gradient is the stem's features times the embedding's.
            self.stem_proj = zero_start(nn.Conv2d(s, head.embed_dim, 1))

    def features(self, levels: list[Tensor], grid: Tensor | None = None) -> Tensor:
        """levels: one ``(B, n, d)`` patch-token tensor per pyramid layer -> ``(B, c, H/8, W/8)``; ``grid``, the
        shape branch's projected patch-grid features ``(B, c, g, g)`` (``head.shape_branch``), joins them
        upsampled."""
        maps = []
        for x, norm, lateral in zip(levels, self.level_norms, self.lateral):
            b, n, d = x.shape
            x = norm(x).transpose(1, 2).reshape(b, d, self.grid, self.grid)  # (B, n, d) -> (B, d, g, g)
            maps.append(lateral(x))
        x = self.upsample(self.fuse(torch.cat(maps, dim=1)))  # (B, c, g, g) -> (B, c, H/8, W/8)
        if self.positions is not None:
            # Per image, though the same for all: on the constant table alone, an export would fold the
            # convolution into a (c, H/8, W/8) constant, 1.4 MB in lvg-s-xy's file against the table's 0.2 MB,
            # for 0.4% of the FLOPs.
            table = self.position_table.expand(x.shape[0], -1, -1, -1)  # (1, 14, H/8, W/8) -> (B, 14, H/8, W/8)
            x = x + self.positions(table).to(x.dtype)  # (B, c, H/8, W/8)
        if grid is not None:
            # Bilinear: what the grid holds about an object is smooth across it; the stem draws the edges.
            x = x + F.interpolate(grid, size=x.shape[-2:], mode="bilinear", align_corners=False).to(x.dtype)
        return x

    def feature_map(self, levels: list[Tensor], image: Tensor | None = None, grid: Tensor | None = None) -> Tensor:
        """The unfolded ``F^V`` ``(B, E, H/m, W/m)``, ``m = head.map_stride`` (for inspection and the equivalence
        test); ``image`` and ``grid`` as in :meth:`forward`."""
        return self.map_from_features(self.features(levels, grid), image)

    def map_from_features(self, h: Tensor, image: Tensor | None = None) -> Tensor:
        """``F^V`` ``(B, E, H/m, W/m)`` from the 1/8-scale features ``h`` ``(B, c, H/8, W/8)`` of
        :meth:`features` (for a caller that has them already); ``image`` as in :meth:`forward`."""
        fmap = self._to_map_scale(self.proj(self.last(h)))
        return fmap if self.stem_proj is None else fmap + self.stem_proj(self.pixels(image))

    def _to_map_scale(self, x: Tensor) -> Tensor:
        """A 1/4-scale ``(B, C, H/4, W/4)`` tensor -> the map's scale ``(B, C, H/m, W/m)``, ``m = map_stride``.

        Bilinear, so upsampling ``F^V`` and upsampling the logits ``F^V . e_j`` are the same function (both
        are linear per pixel); the forward pass does the latter, J channels instead of E."""
        if self.map_stride == 4:
            return x
        h, w = x.shape[-2:]
        return F.interpolate(x, size=(2 * h, 2 * w), mode="bilinear", align_corners=False)

    def pixels(self, image: Tensor | None) -> Tensor:
        """The input image ``(B, 3, S, S)`` -> its stem features ``(B, s, S/m, S/m)`` (``head.image_stem``
        channels, ``m = head.map_stride``)."""
        if self.stem is None:
            raise ValueError("this decoder has no image stem (head.image_stem = 0)")
        if image is None:
            raise ValueError("this decoder reads the image (head.image_stem > 0): pass image=")
        return self.stem(image)

    def forward(self, levels: list[Tensor], emb: Tensor, image: Tensor | None = None,
                pixels: Tensor | None = None, grid: Tensor | None = None) -> Tensor:
        """``levels`` and ``grid`` as in :meth:`features`, ``emb`` ``(B, J, E)``, ``image`` the encoder's
        normalised input ``(B, 3, S, S)`` (read only with ``head.image_stem``; ``pixels``, its :meth:`pixels`
        when the caller has them already) -> logits ``F^V . e_j`` ``(B, J, H/m, W/m)``, ``m = head.map_stride``."""
        h = self.features(levels, grid)  # (B, c, h, w) at 1/8 scale
        w_proj = self.proj.weight[:, :, 0, 0]  # (E, c)
        u = emb @ w_proj  # (B, J, c): W_proj^T e_j
        filters = torch.einsum("ioyx,bjo->bjiyx", self.last.weight, u)  # (B, J, c_in, 2, 2)
        bias = u @ self.last.bias + emb @ self.proj.bias  # (B, J): b_deconv.u_j + b_proj.e_j
        b, j, c, _, _ = filters.shape
        hh, ww = h.shape[-2:]
        # One batched matmul (B, hw, c) @ (B, c, 4J) rather than a 6-D einsum: ONNX Runtime runs the einsum
        # through transposes and a slow generic kernel (~1.5% of lvg-b's CPU time), a MatMul with its GEMM.
        hm = h.flatten(2).transpose(1, 2)  # (B, c, h, w) -> (B, hw, c)
        fm = filters.permute(0, 2, 1, 3, 4).reshape(b, c, j * 4)  # (B, J, c, 2, 2) -> (B, c, J*2*2)
        out = (hm @ fm).reshape(b, hh, ww, j, 2, 2)  # (B, hw, 4J) -> (B, h, w, J, y, x)
        out = out.permute(0, 3, 1, 4, 2, 5).reshape(b, j, 2 * hh, 2 * ww)  # -> (B, J, 2h, 2w): pixel (2i+y, 2k+x)
        out = self._to_map_scale(out + bias[:, :, None, None])  # (B, J, H/m, W/m)
        if self.stem_proj is not None:
            # The stem's share of F^V . e_j, folded the same way: (W_s^T e_j) . S + b_s . e_j, one (s,) filter each.
            pix = (self.pixels(image) if pixels is None else pixels).to(out.dtype)  # (B, s, H/m, W/m)
            us = emb @ self.stem_proj.weight[:, :, 0, 0].to(emb.dtype)  # (B, J, E) @ (E, s) -> (B, J, s)
            sb = emb @ self.stem_proj.bias.to(emb.dtype)  # (B, J)
            out = out + (us @ pix.flatten(2)).reshape(out.shape) + sb[:, :, None, None]  # (B, J, H/m*W/m) -> map
        return out
