"""Where the Triton kernel tests run, and shared helpers.

With CUDA (and ``TRITON_INTERPRET`` unset) the kernels run compiled on the GPU, in fp32, fp16 and bf16.
Without CUDA they run in Triton's CPU interpreter. ``TRITON_INTERPRET=1`` must be set before triton is first
imported in the process (triton jits its own ``tl.*`` helpers at import), so this conftest sets it when it
is imported, during collection, before any test runs; nothing in ``lvg`` imports triton at import time.
The variable then stays set for the session, which on a CPU machine only makes ``triton_available()``
true. ``_interpreter_ready`` fails the kernel tests loudly if triton was imported too early anyway. To run
the interpreter tests on a GPU machine: ``TRITON_INTERPRET=1 pytest tests/kernels``.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys

import pytest
import torch


def _has_triton() -> bool:
    """Whether triton can be imported, without importing it (that must wait for TRITON_INTERPRET)."""
    try:
        return sys.modules.get("triton", 0) is not None and importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


HAS_TRITON = _has_triton()
ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "") not in ("1", "true", "on", "yes")
if HAS_TRITON and not ON_GPU:
    os.environ["TRITON_INTERPRET"] = "1"
DEVICE = "cuda" if ON_GPU else "cpu"
# The interpreter computes bf16 tl.dot wrongly (it multiplies the raw 16-bit patterns), so bf16 is GPU-only.
DTYPES = [torch.float32, torch.float16, torch.bfloat16] if ON_GPU else [torch.float32, torch.float16]
# (atol, rtol) of a Triton output against the reference run on the same inputs.
TOL = {torch.float32: (2e-5, 1e-4), torch.float16: (4e-3, 4e-3), torch.bfloat16: (3e-2, 3e-2)}

requires_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (the `gpu` extra)")
gpu_only = pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device (TRITON_INTERPRET unset)")


@pytest.fixture(autouse=True)
def _interpreter_ready(monkeypatch):
    if HAS_TRITON and not ON_GPU and "triton" in sys.modules:
        import triton.language as tl

        if type(tl.zeros).__name__ != "InterpretedFunction":
            pytest.fail("triton was imported before TRITON_INTERPRET=1 was set; run `pytest tests/kernels` alone")
    if ON_GPU:
        # The reference's fp32 matmuls must be true fp32 to be the ground truth.
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.fixture
def rng(request):
    """A fresh seeded generator per test; the seed is in the test's output so a failure can be replayed
    with ``LVG_TEST_SEED``."""
    seed = int(os.environ.get("LVG_TEST_SEED", random.SystemRandom().randrange(2**31)))
    print(f"{request.node.name}: LVG_TEST_SEED={seed}")
    return torch.Generator().manual_seed(seed)


def randn(rng: torch.Generator, *shape: int, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> torch.Tensor:
    """Standard-normal values drawn on the CPU (reproducible) and moved to the test device."""
    return (torch.randn(*shape, generator=rng) * scale).to(device=DEVICE, dtype=dtype)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, msg: str = "") -> None:
    """Per-dtype tolerance; ``atol`` is relative to the largest expected magnitude (when above 1), since
    rounding in half precision scales with the values, not with each element."""
    atol, rtol = TOL[dtype]
    actual, expected = actual.detach(), expected.detach()
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert torch.isfinite(actual).all(), f"non-finite output {msg}"
    atol *= max(1.0, float(expected.float().abs().max()))
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol, msg=lambda m: f"{msg}\n{m}")


def assert_mask_matches(mask: torch.Tensor, scores_ref: torch.Tensor, mask_ref: torch.Tensor) -> None:
    """Masks agree except on patches whose reference score lies within rounding of the row mean."""
    mean = scores_ref.mean(dim=1, keepdim=True)
    eps = 1e-5 * scores_ref.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)
    decided = (scores_ref - mean).abs() > eps
    bad = (mask != mask_ref) & decided
    assert not bad.any(), f"{int(bad.sum())} patches away from the threshold differ"
    # The near-threshold band must stay a rounding-sized sliver, not hide a real error.
    assert int((~decided).sum()) <= max(2, decided.numel() // 100)
