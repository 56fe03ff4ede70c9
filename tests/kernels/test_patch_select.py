"""Triton target-patch selection (scores + mean-threshold mask) against the PyTorch reference."""

from __future__ import annotations

import pytest
import torch

from lvg.kernels.patch_select import patch_select_backward, patch_select_reference
from tests.kernels.conftest import DEVICE, DTYPES, assert_mask_matches, randn, requires_triton

# (batch, patches, width): awkward sizes, then the paper's (900 patches, width 768).
SIZES = [(3, 899, 72), (2, 900, 768), (1, 5, 3)]


def _launch(v, t, **kw):
    from lvg.kernels.patch_select import patch_select_triton

    return patch_select_triton(v, t, **kw)


def _poisoned(b: int, n: int, fill: bool):
    """Output buffers whose every element is wrong unless the kernel writes it."""
    scores = torch.full((b, n), float("nan"), device=DEVICE)
    mask = torch.full((b, n), fill, device=DEVICE, dtype=torch.bool)
    return scores, mask


@requires_triton
@pytest.mark.parametrize("size", SIZES)
def test_matches_reference_and_writes_everything(size, rng):
    b, n, d = size
    v, t = randn(rng, b, n, d), randn(rng, b, d)
    ref_scores, ref_mask = patch_select_reference(v, t)
    for fill in (True, False):  # a bool output cannot hold NaN: run over all-True and all-False buffers
        scores, mask = _launch(v, t, out=_poisoned(b, n, fill))
        torch.testing.assert_close(scores, ref_scores, atol=1e-5 * d**0.5, rtol=1e-5)
        assert_mask_matches(mask, ref_scores, ref_mask)


@requires_triton
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes_and_strided_inputs(dtype, rng):
    b, n, d = 2, 899, 72
    # The model passes the patch tokens as a view that skips the visual class token.
    tokens = randn(rng, b, 1 + n, d, dtype=dtype)
    v = tokens[:, 1:]
    t = randn(rng, d, b, dtype=dtype).T  # (B, d) with a non-unit inner stride
    assert not v.is_contiguous() and not t.is_contiguous()
    scores, mask = _launch(v, t)
    ref_scores, ref_mask = patch_select_reference(v.contiguous(), t.contiguous())
    assert scores.dtype == torch.float32 and mask.dtype == torch.bool
    # Both accumulate the same low-precision products in fp32; only the summation order differs.
    torch.testing.assert_close(scores, ref_scores, atol=1e-5 * d**0.5, rtol=1e-5)
    assert_mask_matches(mask, ref_scores, ref_mask)


@requires_triton
def test_small_blocks_cover_every_tile(rng):
    """Blocks much smaller than the sizes: many patch blocks, width chunks and threshold passes."""
    b, n, d = 2, 77, 40
    v, t = randn(rng, b, n, d), randn(rng, b, d)
    scores, mask = _launch(v, t, out=_poisoned(b, n, True), config={"BLOCK_N": 16, "BLOCK_D": 16, "BLOCK_T": 16})
    ref_scores, ref_mask = patch_select_reference(v, t)
    torch.testing.assert_close(scores, ref_scores, atol=1e-5 * d**0.5, rtol=1e-5)
    assert_mask_matches(mask, ref_scores, ref_mask)


@requires_triton
def test_selects_the_patches_at_or_above_the_mean():
    """Hand-built scores with an independently known answer, including ties with the mean."""
    d = 4
    t = torch.tensor([[1.0, 0.0, 0.0, 0.0]], device=DEVICE)
    s = torch.tensor([3.0, -1.0, 1.0, 1.0, 0.0, 2.0])  # mean exactly 1.0: the two 1.0 patches tie it
    v = torch.zeros(1, 6, d, device=DEVICE)
    v[0, :, 0] = s.to(DEVICE)
    scores, mask = _launch(v, t)
    assert scores.cpu().tolist() == [s.tolist()]
    assert mask.cpu().tolist() == [[True, False, True, True, False, True]]


@requires_triton
def test_equal_scores_select_every_patch():
    # All scores equal: their float mean may round above them; the kernel must still select patches.
    v = torch.full((2, 899, 72), 0.1, device=DEVICE)
    t = torch.full((2, 72), 0.3, device=DEVICE)
    _, mask = _launch(v, t)
    assert mask.all()


def test_backward_matches_autograd_of_the_reference(rng):
    b, n, d = 2, 33, 20
    v, t = randn(rng, b, n, d).requires_grad_(), randn(rng, b, d).requires_grad_()
    g = randn(rng, b, n)
    scores, _ = patch_select_reference(v, t)
    want_v, want_t = torch.autograd.grad(scores, (v, t), g)
    got_v, got_t = patch_select_backward(g, v.detach(), t.detach())
    torch.testing.assert_close(got_v, want_v)
    torch.testing.assert_close(got_t, want_t)
