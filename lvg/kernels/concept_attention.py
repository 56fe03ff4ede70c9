"""Concept attention (paper Eq. 5): concept tokens attend over the selected patches only."""

from __future__ import annotations

import torch
from torch import Tensor


def concept_attention_reference(v: Tensor, mask: Tensor, concepts: Tensor, scale: float) -> Tensor:
    """``C_V = softmax_over_selected(C @ V^T * scale) @ V``.

    Args:
        v: patches ``(B, n, d)``; mask: selected patches ``(B, n)`` bool (at least one per row);
        concepts: concept tokens ``(Nc, d)``; scale: logit scale (``1/sqrt(d)``).
    Returns:
        visual concept tokens ``(B, Nc, d)`` in ``v``'s dtype.
    """
    logits = torch.einsum("cd,bnd->bcn", concepts.float(), v.float()) * scale  # (B, Nc, n)
    # A mask, never boolean indexing: shapes stay static for export and batching.
    logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
    weights = logits.softmax(dim=-1)
    return torch.einsum("bcn,bnd->bcd", weights, v.float()).to(v.dtype)
