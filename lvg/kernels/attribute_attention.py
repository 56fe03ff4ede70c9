"""Column-normalised attribute attention (paper Eq. 6): concepts are distributed over attributes.

The softmax runs over the attribute axis, so each concept column is normalised on its own: the Triton
kernel holds every attribute token of a batch row in one block (``Na`` is small: 14 in the paper), walks
the concepts in blocks, normalises each block's columns exactly (no online rescaling is needed) and
accumulates ``W @ C_V`` for its slice of the output width. Nothing of size ``(B, Na, Nc)`` is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lvg.kernels._precision import without_autocast
from lvg.kernels._triton import cdiv, dot_precision, interpreting, lazy_jit, next_pow2

if TYPE_CHECKING:
    import triton.language as tl


def attribute_attention_reference(attrs: Tensor, concepts_v: Tensor, scale: float) -> Tensor:
    """``A_check = softmax_over_attributes(A @ C_V^T * scale) @ C_V``.

    The softmax runs over the attribute axis (dim 1 of ``(B, Na, Nc)``): each concept token's weights sum
    to one over all ``Na`` attribute tokens, so attributes compete for concepts (slot-attention style).

    Args:
        attrs: attribute tokens of all expressions ``(B, Na, d)``; concepts_v: ``(B, Nc, d)``.
    Returns:
        new attribute tokens ``(B, Na, d)`` in ``attrs``' dtype.
    """
    # fp32, also under autocast (see concept_attention_reference).
    with without_autocast(attrs):
        logits = torch.einsum("bad,bcd->bac", attrs.float(), concepts_v.float()) * scale  # (B, Na, Nc)
        weights = logits.softmax(dim=1)
        return torch.einsum("bac,bcd->bad", weights, concepts_v.float()).to(attrs.dtype)


def attribute_attention_backward(
    grad_out: Tensor, attrs: Tensor, concepts_v: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    """Gradients of :func:`attribute_attention_reference` w.r.t. ``attrs`` and ``concepts_v``, in their dtypes.

    Recomputes the ``(B, Na, Nc)`` weights, then the softmax-attention backward (softmax over dim 1) in fp32.
    """
    af, cf, g = attrs.float(), concepts_v.float(), grad_out.float()
    weights = (torch.einsum("bad,bcd->bac", af, cf) * scale).softmax(dim=1)  # (B, Na, Nc)
    grad_w = torch.einsum("bad,bcd->bac", g, cf)
    grad_logits = weights * (grad_w - (grad_w * weights).sum(dim=1, keepdim=True)) * scale
    grad_a = torch.einsum("bac,bcd->bad", grad_logits, cf)
    grad_cv = torch.einsum("bac,bad->bcd", weights, g) + torch.einsum("bac,bad->bcd", grad_logits, af)
    return grad_a.to(attrs.dtype), grad_cv.to(concepts_v.dtype)


_LOG2E = 1.4426950408889634
MAX_ATTRIBUTES = 256  # one block holds every attribute token of a row (the paper has 14)


@lazy_jit
def _attribute_attention_kernel(
    A, CV, OUT,
    na, nc, d, qk_scale,
    s_ab, s_aa, s_ad, s_cb, s_cc, s_cd, s_ob, s_oa, s_od,
    BLOCK_A: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_DK: tl.constexpr, BLOCK_DO: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # Program (output-width block, batch row). qk_scale = scale * log2(e): exp2 softmax.
    pid_o = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_a = tl.arange(0, BLOCK_A)
    offs_o = pid_o * BLOCK_DO + tl.arange(0, BLOCK_DO)
    in_a = offs_a < na
    in_o = offs_o < d
    a_row = A + b * s_ab
    cv_row = CV + b * s_cb

    acc = tl.zeros([BLOCK_A, BLOCK_DO], dtype=tl.float32)
    for c0 in range(0, nc, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        in_c = offs_c < nc
        s = tl.zeros([BLOCK_A, BLOCK_C], dtype=tl.float32)
        for k0 in range(0, d, BLOCK_DK):
            offs_k = k0 + tl.arange(0, BLOCK_DK)
            in_k = offs_k < d
            a = tl.load(a_row + offs_a[:, None] * s_aa + offs_k[None, :] * s_ad,
                        mask=in_a[:, None] & in_k[None, :], other=0.0)
            cvt = tl.load(cv_row + offs_c[None, :] * s_cc + offs_k[:, None] * s_cd,
                          mask=in_c[None, :] & in_k[:, None], other=0.0)  # (BLOCK_DK, BLOCK_C)
            s = tl.dot(a, cvt, s, input_precision=PRECISION)
        # Padding attribute rows must not take a share of any concept's weight.
        s = tl.where(in_a[:, None], s * qk_scale, float("-inf"))
        p = tl.exp2(s - tl.max(s, axis=0)[None, :])
        p = p / tl.sum(p, axis=0)[None, :]
        # Padding concept columns get weights too, but their C_V rows load as zero.
        cvo = tl.load(cv_row + offs_c[:, None] * s_cc + offs_o[None, :] * s_cd,
                      mask=in_c[:, None] & in_o[None, :], other=0.0)  # (BLOCK_C, BLOCK_DO)
        acc = tl.dot(p.to(cvo.dtype), cvo, acc, input_precision=PRECISION)
    tl.store(OUT + b * s_ob + offs_a[:, None] * s_oa + offs_o[None, :] * s_od,
             acc.to(OUT.dtype.element_ty), mask=in_a[:, None] & in_o[None, :])


def _config(na: int, d: int) -> dict[str, int]:
    block_a = max(next_pow2(na), 16)
    if interpreting():
        return {"BLOCK_A": block_a, "BLOCK_C": 128, "BLOCK_DK": min(max(next_pow2(d), 16), 1024),
                "BLOCK_DO": min(max(next_pow2(d), 16), 1024)}
    return {"BLOCK_A": block_a, "BLOCK_C": 32, "BLOCK_DK": 64, "BLOCK_DO": min(max(next_pow2(d), 16), 128),
            "num_warps": 4, "num_stages": 2}


def attribute_attention_triton(
    attrs: Tensor, concepts_v: Tensor, scale: float, *,
    out: Tensor | None = None, config: dict[str, int] | None = None,
) -> Tensor:
    """Triton launcher; same contract as :func:`attribute_attention_reference`.

    Args:
        attrs: ``(B, Na, d)`` with ``Na <= 256``; concepts_v: ``(B, Nc, d)``; float32/16/bf16, any strides.
        out: optional preallocated ``(B, Na, d)`` output in ``attrs``' dtype (tests poison it).
        config: optional block sizes (``BLOCK_A`` >= ``Na``, ``BLOCK_C``, ``BLOCK_DK``, ``BLOCK_DO``,
            ``num_warps``, ``num_stages``; every block >= 16 for ``tl.dot``).
    Returns:
        ``(B, Na, d)`` in ``attrs``' dtype; logits and softmax in fp32.
    """
    b, na, d = attrs.shape
    nc = concepts_v.shape[1]
    if na > MAX_ATTRIBUTES:
        raise ValueError(f"the Triton attribute attention holds at most {MAX_ATTRIBUTES} attribute tokens, got {na}")
    if out is None:
        out = torch.empty((b, na, d), device=attrs.device, dtype=attrs.dtype)
    if b == 0 or na == 0 or d == 0:
        return out
    if concepts_v.dtype != attrs.dtype:
        common = torch.promote_types(attrs.dtype, concepts_v.dtype)
        attrs, concepts_v = attrs.to(common), concepts_v.to(common)
    cfg = config or _config(na, d)
    grid = (cdiv(d, cfg["BLOCK_DO"]), b)
    _attribute_attention_kernel[grid](
        attrs, concepts_v, out,
        na, nc, d, float(scale) * _LOG2E,
        attrs.stride(0), attrs.stride(1), attrs.stride(2),
        concepts_v.stride(0), concepts_v.stride(1), concepts_v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        PRECISION=dot_precision(attrs.dtype), **cfg,
    )
    return out
