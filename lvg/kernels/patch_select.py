"""Target-patch selection (paper Eq. 4): scores ``V @ t_cls`` and the threshold mask.

The PyTorch reference here is the ground truth and the CPU / ONNX path.
"""

from __future__ import annotations

import torch
from torch import Tensor


def patch_select_reference(v: Tensor, t_cls: Tensor, *, rule: str = "mean", topk: int = 30) -> tuple[Tensor, Tensor]:
    """Score patches against the text class token and select the target-related ones.

    Args:
        v: visual patch tokens ``(B, n, d)`` (no class token).
        t_cls: text class token ``(B, d)``.
        rule: ``"mean"`` selects ``score >= mean(score)`` (the paper's choice), ``"none"`` selects every
            patch, ``"topk"`` the ``topk`` highest scores (Table 7b's alternatives).
    Returns:
        ``scores (B, n)`` float32 and ``mask (B, n)`` bool. The mask always selects at least one patch.
    """
    # fp32 accumulation: the mean threshold is sensitive to rounding in half precision.
    scores = torch.einsum("bnd,bd->bn", v.float(), t_cls.float())
    if rule == "mean":
        mask = scores >= scores.mean(dim=1, keepdim=True)
    elif rule == "none":
        mask = torch.ones_like(scores, dtype=torch.bool)
    elif rule == "topk":
        k = min(topk, scores.shape[1])
        kth = scores.topk(k, dim=1).values[:, -1:]  # (B, 1): the k-th largest score
        mask = scores >= kth
    else:
        raise ValueError(f"unknown threshold rule {rule!r}")
    return scores, mask
