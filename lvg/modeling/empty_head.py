"""GRES no-target head (paper Appendix B, Figure 5: the "empty prediction module").

A learned empty token cross-attends to the final encoder tokens; a linear layer gives the no-target logit.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EmptyHead(nn.Module):
    def __init__(self, dim: int, heads: int, eps: float) -> None:
        super().__init__()
        self.empty_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.classifier = nn.Linear(dim, 1)

    def forward(self, tokens: Tensor, key_valid: Tensor) -> Tensor:
        """tokens ``(B, T, d)``, key_valid ``(B, T)`` bool -> no-target logit ``(B,)``."""
        q = self.empty_token.expand(tokens.shape[0], -1, -1)
        # A float additive mask instead of key_padding_mask: the bool path differs between the fast and
        # slow MHA kernels, and float masks export cleanly.
        bias = torch.zeros_like(key_valid, dtype=tokens.dtype).masked_fill(~key_valid, float("-inf"))
        x, _ = self.cross_attn(q, tokens, tokens, key_padding_mask=bias, need_weights=False)
        return self.classifier(self.norm(x[:, 0] + q[:, 0])).squeeze(-1)
