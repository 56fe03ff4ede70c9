"""Triton column-normalised attribute attention against the reference."""

from __future__ import annotations

import pytest
import torch

from lvg.kernels.attribute_attention import attribute_attention_backward, attribute_attention_reference
from tests.kernels.conftest import DEVICE, DTYPES, assert_close, randn, requires_triton

# (batch, attributes, width, concepts): awkward sizes, then the paper's (14, 768, 100).
SIZES = [(2, 13, 72, 37), (2, 14, 768, 100), (3, 1, 3, 1)]
SMALL_BLOCKS = {"BLOCK_A": 16, "BLOCK_C": 16, "BLOCK_DK": 16, "BLOCK_DO": 16}


def _launch(a, cv, scale, **kw):
    from lvg.kernels.attribute_attention import attribute_attention_triton

    return attribute_attention_triton(a, cv, scale, **kw)


def _poisoned(b: int, na: int, d: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.full((b, na, d), float("nan"), device=DEVICE, dtype=dtype)


@requires_triton
@pytest.mark.parametrize("size", SIZES)
def test_matches_reference_and_writes_everything(size, rng):
    b, na, d, nc = size
    a, cv = randn(rng, b, na, d), randn(rng, b, nc, d)
    got = _launch(a, cv, d**-0.5, out=_poisoned(b, na, d, a.dtype))
    assert_close(got, attribute_attention_reference(a, cv, d**-0.5), torch.float32, f"size={size}")


@requires_triton
def test_small_blocks_cover_every_tile(rng):
    b, na, d, nc = 2, 13, 40, 37  # 3 concept blocks (one padded), 3 width chunks, 3 output blocks
    a, cv = randn(rng, b, na, d), randn(rng, b, nc, d)
    got = _launch(a, cv, d**-0.5, out=_poisoned(b, na, d, a.dtype), config=SMALL_BLOCKS)
    assert_close(got, attribute_attention_reference(a, cv, d**-0.5), torch.float32)


@requires_triton
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes_and_strided_inputs(dtype, rng):
    b, na, d, nc = 2, 13, 72, 37
    a = randn(rng, b, d, na, dtype=dtype).transpose(1, 2)  # (B, Na, d), transposed storage
    cv = randn(rng, b, nc, 2 * d, dtype=dtype)[:, :, ::2]  # inner stride 2
    got = _launch(a, cv, d**-0.5, out=_poisoned(b, na, d, dtype))
    assert got.dtype == dtype
    assert_close(got, attribute_attention_reference(a, cv, d**-0.5), dtype, f"dtype={dtype}")


@requires_triton
def test_one_attribute_takes_every_concept(rng):
    """With a single attribute token each concept's weight over attributes is 1: the output is sum(C_V)."""
    b, d, nc = 2, 24, 6
    a, cv = randn(rng, b, 1, d, scale=5.0), randn(rng, b, nc, d)
    got = _launch(a, cv, d**-0.5)
    torch.testing.assert_close(got, cv.sum(dim=1, keepdim=True), atol=1e-5, rtol=1e-5)


@requires_triton
def test_columns_are_normalised_over_attributes(rng):
    """Identical attribute tokens split every concept equally: each output is sum(C_V) / Na."""
    b, na, d, nc = 1, 13, 24, 7
    a = randn(rng, b, 1, d).expand(b, na, d)
    cv = randn(rng, b, nc, d)
    got = _launch(a, cv, d**-0.5)
    torch.testing.assert_close(got, (cv.sum(dim=1, keepdim=True) / na).expand(b, na, d), atol=1e-5, rtol=1e-5)


def test_backward_matches_autograd_of_the_reference(rng):
    b, na, d, nc = 2, 13, 24, 9
    a, cv = randn(rng, b, na, d).requires_grad_(), randn(rng, b, nc, d).requires_grad_()
    g = randn(rng, b, na, d)
    want = torch.autograd.grad(attribute_attention_reference(a, cv, d**-0.5), (a, cv), g)
    got = attribute_attention_backward(g, a.detach(), cv.detach(), d**-0.5)
    for x, w in zip(got, want):
        torch.testing.assert_close(x, w, atol=1e-5, rtol=1e-5)
