"""Where each pixel lies relative to the objects an expression's map covers (``HeadConfig.candidate_positions``).

Not in the paper. There ``F^V . e_j`` is linear per pixel, and with ``HeadConfig.pixel_positions`` ``F^V``
knows where a pixel is in the image, so an expression can prefer the left of the *image*. "The leftmost
star" asks for the left of the *stars*: which star that is depends on where the others are, a comparison a
fixed threshold over a linear ramp cannot make (all three stars of a row left of centre pass it). On
synthetic scenes the map already covers the expression's candidates (the target is among the objects it
reaches for 79% of position expressions) while the right one is picked for 59%.

This box takes each expression's own map as the candidates: its sigmoid, detached, weighs a centroid and a
spread, and each pixel's offset from that centroid in units of the spread says where it lies among them.
The expression's embedding chooses how much its x and y offsets count (``e_j -> (a_x, a_y)``, starting at
zero so a model grown from weights without it starts with their function), and the correction is gated by
the map itself, so it re-ranks the candidates and leaves the background where it was.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lvg.kernels._precision import without_autocast

#: Below this the spread is a point: keeps the offsets finite for a map that covers one cell or none.
MIN_SPREAD = 0.05
#: Offsets beyond this many spreads count as this many: a far pixel gains no more than an edge one.
MAX_OFFSET = 3.0


def cell_centres(side: int) -> Tensor:
    """The ``(side * side, 2)`` float32 ``(x, y)`` of each cell of a square map, row-major, in (-1, 1)."""
    u = (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2 - 1  # (side,)
    y, x = torch.meshgrid(u, u, indexing="ij")  # (side, side) each
    return torch.stack([x.flatten(), y.flatten()], dim=1)  # (side*side, 2)


class CandidatePosition(nn.Module):
    """``(B, J, h, w)`` logits and ``(B, J, E)`` expression embeddings -> ``(B, J, h, w)`` logit corrections.

    ``side``: the map's side (``ModelConfig.prob_size``); ``embed_dim``: ``E``.
    """

    def __init__(self, side: int, embed_dim: int) -> None:
        super().__init__()
        # A constant of the architecture, not a weight: rebuilt here, exported as a constant.
        self.register_buffer("centres", cell_centres(side), persistent=False)
        self.coefficients = nn.Linear(embed_dim, 2, bias=False)  # e_j -> (a_x, a_y)
        nn.init.zeros_(self.coefficients.weight)

    def forward(self, logits: Tensor, emb: Tensor) -> Tensor:
        b, j, h, w = logits.shape
        # float32 throughout: a centroid is a sum over h*w cells, which bf16 (8 bits of mantissa) cannot hold.
        with without_autocast(logits):
            p = logits.detach().float().sigmoid().reshape(b, j, h * w)  # (B, J, hw): the candidates' weights
            mass = p.sum(-1, keepdim=True) + 1e-6  # (B, J, 1)
            # The centres and coefficients too: a model cast to bf16 for inference holds them in bf16.
            centres = self.centres.float()  # (hw, 2)
            centroid = (p @ centres) / mass  # (B, J, hw) @ (hw, 2) -> (B, J, 2)
            offset = centres[None, None] - centroid[:, :, None]  # (B, J, hw, 2)
            spread = ((p[..., None] * offset.square()).sum((-2, -1)) / mass[..., 0]).sqrt()  # (B, J)
            z = (offset / (spread[:, :, None, None] + MIN_SPREAD)).clamp(-MAX_OFFSET, MAX_OFFSET)  # (B, J, hw, 2)
            a = emb.float() @ self.coefficients.weight.float().T  # (B, J, E) @ (E, 2) -> (B, J, 2)
            shift = (z @ a[..., None])[..., 0]  # (B, J, hw, 2) @ (B, J, 2, 1) -> (B, J, hw)
            out = (p * shift).reshape(b, j, h, w)  # gated by the map: background cells keep their logits
        return out.to(logits.dtype)
