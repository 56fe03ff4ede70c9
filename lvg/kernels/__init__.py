"""Kernels for the visual concept injector, and the one place that chooses their implementation.

``impl="reference"`` is plain PyTorch (the ground truth, the CPU path and what ONNX export traces);
``impl="triton"`` runs fused Triton kernels; ``impl="auto"`` picks Triton on CUDA when it is importable
and the reference elsewhere. ``LVG_KERNEL_IMPL`` overrides ``auto`` (for tests). The model resolves the
implementation once, when it is built.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from torch import Tensor

from lvg.kernels.vci import VCIOutput, vci_reference

IMPLS = ("reference", "triton", "auto")
ENV_VAR = "LVG_KERNEL_IMPL"

VCIFn = Callable[..., VCIOutput]


def triton_available() -> bool:
    """True when Triton is importable and can run (a CUDA device, or ``TRITON_INTERPRET=1``)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    import torch

    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def resolve_impl(impl: str = "auto") -> str:
    """Turn ``"auto"`` (or the ``LVG_KERNEL_IMPL`` override) into ``"reference"`` or ``"triton"``."""
    if impl not in IMPLS:
        raise ValueError(f"unknown kernel impl {impl!r}; choose one of {IMPLS}")
    if impl == "auto":
        impl = os.environ.get(ENV_VAR, "auto")
        if impl not in IMPLS:
            raise ValueError(f"{ENV_VAR}={impl!r} is not one of {IMPLS}")
    if impl == "auto":
        import torch

        impl = "triton" if torch.cuda.is_available() and triton_available() else "reference"
    return impl


def get_vci(impl: str = "auto") -> VCIFn:
    """The visual-concept-injection function for ``impl`` (resolved once, at model build time)."""
    impl = resolve_impl(impl)
    if impl == "triton":
        try:
            import triton  # noqa: F401
        except ImportError:
            from lvg.errors import MissingDependencyError

            raise MissingDependencyError("triton", "gpu", "the Triton kernel implementation") from None
        from lvg.kernels._registry import triton_ops
        from lvg.kernels.vci import vci_triton

        triton_ops()  # register the lvg::vci_* operators now, outside any torch.compile trace
        return vci_triton
    return vci_reference


def visual_concept_injection(
    v: Tensor, t_cls: Tensor, attrs: Tensor, concepts: Tensor, *, rule: str = "mean", topk: int = 30,
    impl: str = "auto",
) -> VCIOutput:
    """Inject visual concepts into attribute tokens (paper Eq. 4-7).

    Args:
        v: visual patch tokens ``(B, n, d)``; t_cls: text class token ``(B, d)``;
        attrs: attribute tokens of all latent expressions ``(B, Na, d)``; concepts: ``(Nc, d)``.
        rule / topk: the target-patch threshold rule (``"mean"``, ``"none"``, ``"topk"``).
    Returns:
        ``VCIOutput(attrs=(B, Na, d), mask=(B, n) bool)``.
    """
    return get_vci(impl)(v, t_cls, attrs, concepts, rule=rule, topk=topk)


__all__ = ["IMPLS", "VCIOutput", "get_vci", "resolve_impl", "triton_available", "visual_concept_injection"]
