"""Column-normalised attribute attention (paper Eq. 6): concepts are distributed over attributes."""

from __future__ import annotations

import torch
from torch import Tensor


def attribute_attention_reference(attrs: Tensor, concepts_v: Tensor, scale: float) -> Tensor:
    """``A_check = softmax_over_attributes(A @ C_V^T * scale) @ C_V``.

    The softmax runs over the attribute axis (dim 1 of ``(B, Na, Nc)``): each concept token's weights sum
    to one over all ``Na`` attribute tokens, so attributes compete for concepts (slot-attention style).

    Args:
        attrs: attribute tokens of all expressions ``(B, Na, d)``; concepts_v: ``(B, Nc, d)``.
    Returns:
        new attribute tokens ``(B, Na, d)`` in ``attrs``' dtype.
    """
    logits = torch.einsum("bad,bcd->bac", attrs.float(), concepts_v.float()) * scale  # (B, Na, Nc)
    weights = logits.softmax(dim=1)
    return torch.einsum("bac,bcd->bad", weights, concepts_v.float()).to(attrs.dtype)
