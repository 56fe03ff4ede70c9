"""Target-patch selection (paper Eq. 4): scores ``V @ t_cls`` and the threshold mask.

The PyTorch reference here is the ground truth and the CPU / ONNX path. The Triton version (``mean`` rule)
reads ``V`` once: ``_scores_kernel`` computes the scores with fp32 accumulation over a (batch, patch-block)
grid, then ``_threshold_kernel`` reads only the ``(B, n)`` scores to form the mean and the mask. Two launches
rather than one because the mean needs every score of a row: one program per row would leave most of the
GPU idle at small batch, while the second pass touches ``n`` floats per row, not ``n * d``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lvg.kernels._precision import without_autocast
from lvg.kernels._triton import cdiv, interpreting, lazy_jit, next_pow2

if TYPE_CHECKING:
    import triton.language as tl


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
    # fp32 accumulation: the mean threshold is sensitive to rounding in half precision. Autocast would
    # run the einsum in bf16 / fp16 whatever its inputs' dtype, so it is switched off here.
    with without_autocast(v):
        scores = torch.einsum("bnd,bd->bn", v.float(), t_cls.float())
    if rule == "mean":
        # min(mean, max): if rounding puts the mean above every score (all scores equal), the top patch
        # is still selected, so the masked softmax never sees an empty row.
        mean = scores.mean(dim=1, keepdim=True)
        mask = scores >= torch.minimum(mean, scores.amax(dim=1, keepdim=True))
    elif rule == "none":
        mask = torch.ones_like(scores, dtype=torch.bool)
    elif rule == "topk":
        k = min(topk, scores.shape[1])
        kth = scores.topk(k, dim=1).values[:, -1:]  # (B, 1): the k-th largest score
        mask = scores >= kth
    else:
        raise ValueError(f"unknown threshold rule {rule!r}")
    return scores, mask


def patch_select_backward(grad_scores: Tensor, v: Tensor, t_cls: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of ``scores = V @ t_cls`` w.r.t. ``v (B, n, d)`` and ``t_cls (B, d)``, in their dtypes.

    The mask is a step function of the scores: it carries no gradient.
    """
    g = grad_scores.float()  # (B, n)
    grad_v = g[:, :, None] * t_cls.float()[:, None, :]  # (B, n, d)
    grad_t = torch.einsum("bn,bnd->bd", g, v.float())
    return grad_v.to(v.dtype), grad_t.to(t_cls.dtype)


@lazy_jit
def _scores_kernel(
    V, T, S,
    n, d,
    s_vb, s_vn, s_vd, s_tb, s_td, s_sb, s_sn,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # Program (patch block, batch row): scores[b, block] = V[b, block, :] @ t_cls[b] in fp32.
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)  # int64: B * n * d can pass 2**31 at large batch
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    in_n = offs_n < n
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for d0 in range(0, d, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        in_d = offs_d < d
        t = tl.load(T + b * s_tb + offs_d * s_td, mask=in_d, other=0.0).to(tl.float32)
        v = tl.load(
            V + b * s_vb + offs_n[:, None] * s_vn + offs_d[None, :] * s_vd,
            mask=in_n[:, None] & in_d[None, :], other=0.0,
        ).to(tl.float32)
        acc += tl.sum(v * t[None, :], axis=1)
    tl.store(S + b * s_sb + offs_n * s_sn, acc, mask=in_n)


@lazy_jit
def _threshold_kernel(
    S, M,
    n,
    s_sb, s_sn, s_mb, s_mn,
    BLOCK_N: tl.constexpr,
):
    # Program per batch row: mask = scores >= mean(scores), over the (B, n) scores only.
    b = tl.program_id(0).to(tl.int64)
    total = tl.zeros([BLOCK_N], dtype=tl.float32)
    top = tl.full([BLOCK_N], float("-inf"), dtype=tl.float32)
    for n0 in range(0, n, BLOCK_N):
        offs = n0 + tl.arange(0, BLOCK_N)
        s = tl.load(S + b * s_sb + offs * s_sn, mask=offs < n, other=0.0)
        total += s
        top = tl.maximum(top, tl.where(offs < n, s, float("-inf")))
    mean = tl.sum(total, axis=0) / n
    # The mean of equal scores can round above their maximum; never select nothing.
    thr = tl.minimum(mean, tl.max(top, axis=0))
    for n0 in range(0, n, BLOCK_N):
        offs = n0 + tl.arange(0, BLOCK_N)
        s = tl.load(S + b * s_sb + offs * s_sn, mask=offs < n, other=0.0)
        tl.store(M + b * s_mb + offs * s_mn, s >= thr, mask=offs < n)


def _scores_config(d: int) -> dict[str, int]:
    if interpreting():
        # The interpreter pays per op, not per byte: few, large blocks.
        return {"BLOCK_N": 128, "BLOCK_D": min(next_pow2(d), 1024)}
    return {"BLOCK_N": 32, "BLOCK_D": min(next_pow2(d), 256), "num_warps": 4}


def patch_select_triton(
    v: Tensor, t_cls: Tensor, *, out: tuple[Tensor, Tensor] | None = None, config: dict[str, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Triton launcher for the ``mean`` rule: ``scores (B, n)`` float32 and ``mask (B, n)`` bool.

    Args:
        v: ``(B, n, d)`` float32/16/bf16 on CUDA (or CPU under ``TRITON_INTERPRET=1``), any strides.
        t_cls: ``(B, d)``, any float dtype.
        out: optional preallocated ``(scores, mask)`` (tests pass poisoned buffers to check every element
            is written).
        config: optional block sizes: ``BLOCK_N``, ``BLOCK_D`` (and ``num_warps``) for the scores kernel,
            ``BLOCK_T`` for the threshold kernel.
    """
    b, n, d = v.shape
    if out is None:
        scores = torch.empty((b, n), device=v.device, dtype=torch.float32)
        mask = torch.empty((b, n), device=v.device, dtype=torch.bool)
    else:
        scores, mask = out
    if b == 0 or n == 0:
        return scores, mask
    cfg = dict(config or _scores_config(d))
    block_t = cfg.pop("BLOCK_T", min(next_pow2(n), 4096 if interpreting() else 1024))
    grid = (cdiv(n, cfg["BLOCK_N"]), b)
    _scores_kernel[grid](
        v, t_cls, scores, n, d,
        v.stride(0), v.stride(1), v.stride(2), t_cls.stride(0), t_cls.stride(1), scores.stride(0), scores.stride(1),
        **cfg,
    )
    _threshold_kernel[(b,)](
        scores, mask, n, scores.stride(0), scores.stride(1), mask.stride(0), mask.stride(1), BLOCK_N=block_t,
    )
    return scores, mask
