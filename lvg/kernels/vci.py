"""Visual concept injection: patch selection -> concept attention -> attribute attention."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from lvg.kernels.attribute_attention import attribute_attention_reference
from lvg.kernels.concept_attention import concept_attention_reference
from lvg.kernels.patch_select import patch_select_reference


class VCIOutput(NamedTuple):
    attrs: Tensor  # (B, Na, d) new attribute tokens
    mask: Tensor  # (B, n) bool selected target-related patches


def vci_reference(
    v: Tensor, t_cls: Tensor, attrs: Tensor, concepts: Tensor, *, rule: str = "mean", topk: int = 30
) -> VCIOutput:
    """Reference chain of the three ops; shapes as in :func:`lvg.kernels.visual_concept_injection`."""
    scale = v.shape[-1] ** -0.5
    _, mask = patch_select_reference(v, t_cls, rule=rule, topk=topk)
    concepts_v = concept_attention_reference(v, mask, concepts, scale)
    return VCIOutput(attribute_attention_reference(attrs, concepts_v, scale), mask)


def _triton_can_run(v: Tensor) -> bool:
    """Whether the Triton ops can run on ``v`` here: a CUDA tensor, or any tensor in Triton's interpreter."""
    from lvg.kernels._triton import interpreting

    return v.is_cuda or interpreting()


def vci_triton(
    v: Tensor, t_cls: Tensor, attrs: Tensor, concepts: Tensor, *, rule: str = "mean", topk: int = 30
) -> VCIOutput:
    """The Triton chain (``lvg::vci_*`` ops); same contract as :func:`vci_reference`.

    Falls back to the reference where the kernels do not apply: during ONNX export (the exported graph
    must be plain ONNX operators), and for tensors the kernels cannot run on (CPU without the interpreter,
    e.g. a model built for CUDA and exported on CPU). Rules other than ``"mean"`` select patches with the
    reference and run the two attention kernels on that mask.
    """
    import torch

    if torch.onnx.is_in_onnx_export() or not _triton_can_run(v):
        return vci_reference(v, t_cls, attrs, concepts, rule=rule, topk=topk)
    if not torch.compiler.is_compiling():
        # Registration is Python-side setup that torch.compile must not trace; get_vci() has done it already
        # for the model, this covers direct callers.
        from lvg.kernels._registry import triton_ops

        triton_ops()
    ops = torch.ops.lvg
    scale = v.shape[-1] ** -0.5
    if rule == "mean":
        _, mask = ops.vci_patch_select(v, t_cls)
    else:
        _, mask = patch_select_reference(v, t_cls, rule=rule, topk=topk)
    concepts_v = ops.vci_concept_attention(v, mask, concepts, scale)  # (B, Nc, d)
    return VCIOutput(ops.vci_attribute_attention(attrs, concepts_v, scale), mask)
