"""Where each pixel lies relative to the objects an expression's map covers (``HeadConfig.candidate_positions``).

Not in the paper. There ``F^V . e_j`` is linear per pixel, and with ``HeadConfig.pixel_positions`` ``F^V``
knows where a pixel is in the image, so an expression can prefer the left of the *image*. "The leftmost
star" asks for the left of the *stars*: which star that is depends on where the others are, a comparison a
fixed threshold over a linear ramp cannot make (all three stars of a row left of centre pass it). On
synthetic scenes the map already covers the expression's candidates (the target is among the objects it
reaches for 77% of position expressions) while the right one is picked for 59%.

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
from lvg.modeling.encoder import zero_start

#: Below this the spread is a point: keeps the offsets finite for a map that covers one cell or none.
MIN_SPREAD = 0.05
#: Offsets beyond this many spreads count as this many: a far pixel gains no more than an edge one.
MAX_OFFSET = 3.0


def cell_ticks(side: int) -> Tensor:
    """The ``(side,)`` float32 centre of each column (x) or row (y) of a square map, in (-1, 1)."""
    return (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2 - 1


class CandidatePosition(nn.Module):
    """``(B, J, h, w)`` logits and ``(B, J, E)`` expression embeddings -> ``(B, J, h, w)`` logit corrections.

    ``side``: the map's side (``ModelConfig.prob_size``); ``embed_dim``: ``E``.
    """

    def __init__(self, side: int, embed_dim: int) -> None:
        super().__init__()
        # A constant of the architecture, not a weight: rebuilt here, exported as a constant. One axis is
        # enough (x of a cell is its column's, y its row's), so the file holds side floats, not side^2 pairs.
        self.register_buffer("ticks", cell_ticks(side), persistent=False)
        self.coefficients = zero_start(nn.Linear(embed_dim, 2, bias=False))  # e_j -> (a_x, a_y)

    def forward(self, logits: Tensor, emb: Tensor) -> Tensor:
        # float32 throughout: a centroid is a sum over h*w cells, which bf16 (8 bits of mantissa) cannot hold;
        # the ticks and coefficients too, since a model cast to bf16 for inference holds them in bf16.
        with without_autocast(logits):
            p = logits.detach().float().sigmoid()  # (B, J, h, w): the candidates' weights
            u = self.ticks.float()  # (side,)
            cols, rows = p.sum(2), p.sum(3)  # (B, J, w), (B, J, h): the weights per column and per row
            mass = cols.sum(-1) + 1e-6  # (B, J)
            dx = u - ((cols @ u) / mass)[..., None]  # (B, J, w): each column's x minus the centroid's
            dy = u - ((rows @ u) / mass)[..., None]  # (B, J, h)
            spread = (((cols * dx.square()).sum(-1) + (rows * dy.square()).sum(-1)) / mass).sqrt()  # (B, J)
            scale = (spread + MIN_SPREAD)[..., None]  # (B, J, 1)
            zx = (dx / scale).clamp(-MAX_OFFSET, MAX_OFFSET)  # (B, J, w): offsets in spreads
            zy = (dy / scale).clamp(-MAX_OFFSET, MAX_OFFSET)  # (B, J, h)
            a = emb.float() @ self.coefficients.weight.float().T  # (B, J, E) @ (E, 2) -> (B, J, 2)
            shift = (a[..., 0, None, None] * zx[:, :, None, :]  # (B, J, 1, w)
                     + a[..., 1, None, None] * zy[:, :, :, None])  # (B, J, h, 1) -> (B, J, h, w)
            out = p * shift  # gated by the map: background cells keep their logits
        return out.to(logits.dtype)
