"""Concept attention (paper Eq. 5): concept tokens attend over the selected patches only.

The Triton kernel is flash-attention shaped: a program owns a block of concept tokens (and a block of the
output width), streams the patches of its batch row in tiles, and keeps a running max / sum per concept
(online softmax, fp32), so the ``(B, Nc, n)`` weights never reach memory and ``V`` is read from HBM once
per row (the other concept / width blocks of the same row hit L2). Unselected patches enter as ``-inf``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lvg.kernels._precision import without_autocast
from lvg.kernels._triton import cdiv, dot_precision, interpreting, lazy_jit, next_pow2

if TYPE_CHECKING:
    import triton.language as tl


def concept_attention_reference(v: Tensor, mask: Tensor, concepts: Tensor, scale: float) -> Tensor:
    """``C_V = softmax_over_selected(C @ V^T * scale) @ V``.

    Args:
        v: patches ``(B, n, d)``; mask: selected patches ``(B, n)`` bool (at least one per row);
        concepts: concept tokens ``(Nc, d)``; scale: logit scale (``1/sqrt(d)``).
    Returns:
        visual concept tokens ``(B, Nc, d)`` in ``v``'s dtype.
    """
    # fp32, also under autocast (which would run the einsums in bf16 / fp16 whatever their inputs' dtype):
    # with large activations, half-precision logits tie and the softmax's gradient explodes.
    with without_autocast(v):
        logits = torch.einsum("cd,bnd->bcn", concepts.float(), v.float()) * scale  # (B, Nc, n)
        # A mask, never boolean indexing: shapes stay static for export and batching.
        logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
        weights = logits.softmax(dim=-1)
        return torch.einsum("bcn,bnd->bcd", weights, v.float()).to(v.dtype)


def concept_attention_backward(
    grad_out: Tensor, v: Tensor, mask: Tensor, concepts: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    """Gradients of :func:`concept_attention_reference` w.r.t. ``v`` and ``concepts``, in their dtypes.

    Recomputes the ``(B, Nc, n)`` softmax weights from the inputs (nothing of that size is saved in the
    forward), then applies the softmax-attention backward in fp32.
    """
    vf, cf, g = v.float(), concepts.float(), grad_out.float()
    logits = torch.einsum("cd,bnd->bcn", cf, vf) * scale  # (B, Nc, n)
    weights = logits.masked_fill(~mask[:, None, :], float("-inf")).softmax(dim=-1)
    grad_w = torch.einsum("bcd,bnd->bcn", g, vf)  # (B, Nc, n)
    # softmax backward; unselected patches have weight 0 and so get no logit gradient.
    grad_logits = weights * (grad_w - (grad_w * weights).sum(dim=-1, keepdim=True)) * scale
    grad_v = torch.einsum("bcn,bcd->bnd", weights, g) + torch.einsum("bcn,cd->bnd", grad_logits, cf)
    grad_c = torch.einsum("bcn,bnd->cd", grad_logits, vf)
    return grad_v.to(v.dtype), grad_c.to(concepts.dtype)


_LOG2E = 1.4426950408889634


@lazy_jit
def _concept_attention_kernel(
    V, M, C, OUT,
    n, d, nc, qk_scale,
    s_vb, s_vn, s_vd, s_mb, s_mn, s_cc, s_cd, s_ob, s_oc, s_od,
    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DK: tl.constexpr, BLOCK_DO: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # Program (concept block, output-width block, batch row). qk_scale = scale * log2(e): exp2 softmax.
    pid_c = tl.program_id(0)
    pid_o = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)  # int64: B * n * d can pass 2**31 at large batch
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_o = pid_o * BLOCK_DO + tl.arange(0, BLOCK_DO)
    in_c = offs_c < nc
    in_o = offs_o < d
    v_row = V + b * s_vb

    m_i = tl.full([BLOCK_C], float("-inf"), dtype=tl.float32)  # running max of the logits (log2 units)
    l_i = tl.zeros([BLOCK_C], dtype=tl.float32)  # running softmax denominator
    acc = tl.zeros([BLOCK_C, BLOCK_DO], dtype=tl.float32)
    for n0 in range(0, n, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        in_n = offs_n < n
        sel = tl.load(M + b * s_mb + offs_n * s_mn, mask=in_n, other=0) != 0
        # Logits need the full width: accumulate C @ V^T over width chunks.
        s = tl.zeros([BLOCK_C, BLOCK_N], dtype=tl.float32)
        for k0 in range(0, d, BLOCK_DK):
            offs_k = k0 + tl.arange(0, BLOCK_DK)
            in_k = offs_k < d
            c = tl.load(C + offs_c[:, None] * s_cc + offs_k[None, :] * s_cd,
                        mask=in_c[:, None] & in_k[None, :], other=0.0)
            vt = tl.load(v_row + offs_n[None, :] * s_vn + offs_k[:, None] * s_vd,
                         mask=in_n[None, :] & in_k[:, None], other=0.0)  # (BLOCK_DK, BLOCK_N)
            s = tl.dot(c, vt, s, input_precision=PRECISION)
        s = tl.where(sel[None, :], s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # Until a row has seen a selected patch its max is -inf; exp2(-inf - -inf) would be NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        vo = tl.load(v_row + offs_n[:, None] * s_vn + offs_o[None, :] * s_vd,
                     mask=in_n[:, None] & in_o[None, :], other=0.0)  # (BLOCK_N, BLOCK_DO)
        acc = tl.dot(p.to(vo.dtype), vo, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new
    out = acc / l_i[:, None]  # a row with no selected patch gives NaN, as the reference does
    tl.store(OUT + b * s_ob + offs_c[:, None] * s_oc + offs_o[None, :] * s_od,
             out.to(OUT.dtype.element_ty), mask=in_c[:, None] & in_o[None, :])


def _config(b: int, d: int, nc: int) -> dict[str, int]:
    if interpreting():
        # The interpreter pays per op, not per byte: few, large blocks.
        return {"BLOCK_C": min(max(next_pow2(nc), 16), 128), "BLOCK_N": 128,
                "BLOCK_DK": min(max(next_pow2(d), 16), 1024), "BLOCK_DO": min(max(next_pow2(d), 16), 1024)}
    # GPU default (see benchmarks/bench_vci.py --tune for the sweep that should refine it).
    return {"BLOCK_C": 32, "BLOCK_N": 64, "BLOCK_DK": 64, "BLOCK_DO": min(max(next_pow2(d), 16), 256),
            "num_warps": 8, "num_stages": 2}


def concept_attention_triton(
    v: Tensor, mask: Tensor, concepts: Tensor, scale: float, *,
    out: Tensor | None = None, config: dict[str, int] | None = None,
) -> Tensor:
    """Triton launcher; same contract as :func:`concept_attention_reference`.

    Args:
        v: ``(B, n, d)`` float32/16/bf16 on CUDA (or CPU under ``TRITON_INTERPRET=1``), any strides.
        mask: ``(B, n)`` bool; concepts: ``(Nc, d)``; both any strides.
        out: optional preallocated ``(B, Nc, d)`` output in ``v``'s dtype (tests poison it).
        config: optional block sizes (``BLOCK_C``, ``BLOCK_N``, ``BLOCK_DK``, ``BLOCK_DO``, ``num_warps``,
            ``num_stages``; every block >= 16 for ``tl.dot``).
    Returns:
        ``(B, Nc, d)`` in ``v``'s dtype; logits and softmax in fp32.
    """
    b, n, d = v.shape
    nc = concepts.shape[0]
    if out is None:
        out = torch.empty((b, nc, d), device=v.device, dtype=v.dtype)
    if b == 0 or nc == 0 or d == 0:
        return out
    if concepts.dtype != v.dtype:
        # tl.dot needs one operand dtype; promoting (rare: the model casts its concepts) keeps the fp32 math.
        common = torch.promote_types(v.dtype, concepts.dtype)
        v, concepts = v.to(common), concepts.to(common)
    cfg = config or _config(b, d, nc)
    grid = (cdiv(nc, cfg["BLOCK_C"]), cdiv(d, cfg["BLOCK_DO"]), b)
    _concept_attention_kernel[grid](
        v, mask, concepts, out,
        n, d, nc, float(scale) * _LOG2E,
        v.stride(0), v.stride(1), v.stride(2), mask.stride(0), mask.stride(1),
        concepts.stride(0), concepts.stride(1), out.stride(0), out.stride(1), out.stride(2),
        PRECISION=dot_precision(v.dtype), **cfg,
    )
    return out
