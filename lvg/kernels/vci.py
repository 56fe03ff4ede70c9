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
