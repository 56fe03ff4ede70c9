"""Triton concept attention (masked online softmax over the selected patches) against the reference."""

from __future__ import annotations

import pytest
import torch

from lvg.kernels.concept_attention import concept_attention_backward, concept_attention_reference
from tests.kernels.conftest import DEVICE, DTYPES, assert_close, randn, requires_triton

# (batch, patches, width, concepts): awkward sizes, then the paper's (900, 768, 100).
SIZES = [(2, 899, 72, 37), (2, 900, 768, 100), (3, 5, 3, 1)]
SMALL_BLOCKS = {"BLOCK_C": 16, "BLOCK_N": 16, "BLOCK_DK": 16, "BLOCK_DO": 16}


def _launch(v, mask, c, scale, **kw):
    from lvg.kernels.concept_attention import concept_attention_triton

    return concept_attention_triton(v, mask, c, scale, **kw)


def _random_mask(rng: torch.Generator, b: int, n: int) -> torch.Tensor:
    """About half the patches, at least one per row (the mean rule always selects one)."""
    mask = torch.rand(b, n, generator=rng) < 0.5
    mask[:, torch.randint(n, (1,), generator=rng)] = True
    return mask.to(DEVICE)


def _poisoned(b: int, nc: int, d: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.full((b, nc, d), float("nan"), device=DEVICE, dtype=dtype)


@requires_triton
@pytest.mark.parametrize("size", SIZES)
def test_matches_reference_and_writes_everything(size, rng):
    b, n, d, nc = size
    v, c, mask = randn(rng, b, n, d), randn(rng, nc, d), _random_mask(rng, b, n)
    scale = d**-0.5
    got = _launch(v, mask, c, scale, out=_poisoned(b, nc, d, v.dtype))
    assert_close(got, concept_attention_reference(v, mask, c, scale), torch.float32, f"size={size}")


@requires_triton
def test_small_blocks_cover_every_tile(rng):
    """Many concept blocks (with padding), patch tiles, logit-width chunks and output-width blocks; the
    first patch tiles hold no selected patch (the running max starts at -inf)."""
    b, n, d, nc = 2, 77, 40, 19
    v, c, mask = randn(rng, b, n, d), randn(rng, nc, d), _random_mask(rng, b, n)
    mask[:, :40] = False
    mask[:, 50] = True
    got = _launch(v, mask, c, d**-0.5, out=_poisoned(b, nc, d, v.dtype), config=SMALL_BLOCKS)
    assert_close(got, concept_attention_reference(v, mask, c, d**-0.5), torch.float32)


@requires_triton
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes_and_strided_inputs(dtype, rng):
    b, n, d, nc = 2, 899, 72, 37
    v = randn(rng, b, 1 + n, d, dtype=dtype)[:, 1:]  # the model's view past the visual class token
    c = randn(rng, d, nc, dtype=dtype).T  # (Nc, d), transposed storage
    mask = _random_mask(rng, b, n)
    got = _launch(v, mask, c, d**-0.5, out=_poisoned(b, nc, d, dtype))
    assert got.dtype == dtype
    assert_close(got, concept_attention_reference(v, mask, c, d**-0.5), dtype, f"dtype={dtype}")


@requires_triton
def test_single_selected_patch_returns_that_patch(rng):
    """Softmax over one selected patch is 1 there: every concept token equals that patch, whatever C is."""
    b, n, d, nc = 2, 50, 24, 5
    v, c = randn(rng, b, n, d), randn(rng, nc, d, scale=10.0)
    mask = torch.zeros(b, n, dtype=torch.bool, device=DEVICE)
    mask[0, 7] = mask[1, 49] = True
    got = _launch(v, mask, c, d**-0.5)
    torch.testing.assert_close(got[0], v[0, 7].expand(nc, d))
    torch.testing.assert_close(got[1], v[1, 49].expand(nc, d))


def test_backward_matches_autograd_of_the_reference(rng):
    b, n, d, nc = 2, 41, 24, 9
    v, c = randn(rng, b, n, d).requires_grad_(), randn(rng, nc, d).requires_grad_()
    mask = _random_mask(rng, b, n)
    g = randn(rng, b, nc, d)
    want = torch.autograd.grad(concept_attention_reference(v, mask, c, d**-0.5), (v, c), g)
    got = concept_attention_backward(g, v.detach(), mask, c.detach(), d**-0.5)
    for a, w in zip(got, want):
        torch.testing.assert_close(a, w, atol=1e-5, rtol=1e-5)
