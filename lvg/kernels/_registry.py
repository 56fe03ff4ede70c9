"""The Triton VCI kernels as ``torch.library`` operators (namespace ``lvg``), registered on first use.

- ``lvg::vci_patch_select(Tensor v, Tensor t_cls) -> (Tensor scores, Tensor mask)`` (the ``mean`` rule)
- ``lvg::vci_concept_attention(Tensor v, Tensor mask, Tensor concepts, float scale) -> Tensor``
- ``lvg::vci_attribute_attention(Tensor attrs, Tensor concepts_v, float scale) -> Tensor``

On CUDA they are ``torch.library.triton_op``: ``torch.compile`` (Inductor) sees the Triton kernels inside
them, and ``torch.export`` keeps them as named ops. Under ``TRITON_INTERPRET=1`` or without CUDA (the CPU
tests) they are plain ``custom_op`` s, because the interpreter cannot run on the fake tensors a
``triton_op`` is traced with. Both forms share the explicit fake (meta) functions and the autograd formulas
below, which the CPU tests check.

Backward: PyTorch, through the reference's math with recomputation (each op file's ``*_backward``): the
softmax weights are recomputed from the saved inputs instead of being stored by the forward. The VCI is
bandwidth-bound and its backward runs only in training, where the encoder dominates the step time, so a
Triton backward kernel would buy little and add a second place for the math to go wrong.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from lvg.kernels._triton import interpreting
from lvg.kernels.attribute_attention import attribute_attention_backward, attribute_attention_triton
from lvg.kernels.concept_attention import concept_attention_backward, concept_attention_triton
from lvg.kernels.patch_select import patch_select_backward, patch_select_triton

NAMESPACE = "lvg"


class TritonOps(NamedTuple):
    """The registered operators (callables taking and returning tensors, autograd-aware)."""

    patch_select: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
    concept_attention: Callable[[Tensor, Tensor, Tensor, float], Tensor]
    attribute_attention: Callable[[Tensor, Tensor, float], Tensor]


def _patch_select(v: Tensor, t_cls: Tensor) -> tuple[Tensor, Tensor]:
    return patch_select_triton(v, t_cls)


def _patch_select_fake(v: Tensor, t_cls: Tensor) -> tuple[Tensor, Tensor]:
    b, n, _ = v.shape
    return v.new_empty((b, n), dtype=torch.float32), v.new_empty((b, n), dtype=torch.bool)


def _patch_select_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    v, t_cls = inputs
    ctx.save_for_backward(v, t_cls)


def _patch_select_bwd(ctx: Any, grad_scores: Tensor | None, grad_mask: Tensor | None) -> tuple[Any, ...]:
    v, t_cls = ctx.saved_tensors
    if grad_scores is None:
        return None, None
    return patch_select_backward(grad_scores, v, t_cls)


def _concept_attention(v: Tensor, mask: Tensor, concepts: Tensor, scale: float) -> Tensor:
    return concept_attention_triton(v, mask, concepts, scale)


def _concept_attention_fake(v: Tensor, mask: Tensor, concepts: Tensor, scale: float) -> Tensor:
    b, _, d = v.shape
    return v.new_empty((b, concepts.shape[0], d))


def _concept_attention_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    v, mask, concepts, scale = inputs
    ctx.save_for_backward(v, mask, concepts)
    ctx.scale = scale


def _concept_attention_bwd(ctx: Any, grad_out: Tensor) -> tuple[Any, ...]:
    v, mask, concepts = ctx.saved_tensors
    grad_v, grad_c = concept_attention_backward(grad_out, v, mask, concepts, ctx.scale)
    return grad_v, None, grad_c, None


def _attribute_attention(attrs: Tensor, concepts_v: Tensor, scale: float) -> Tensor:
    return attribute_attention_triton(attrs, concepts_v, scale)


def _attribute_attention_fake(attrs: Tensor, concepts_v: Tensor, scale: float) -> Tensor:
    return attrs.new_empty(attrs.shape)


def _attribute_attention_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    attrs, concepts_v, scale = inputs
    ctx.save_for_backward(attrs, concepts_v)
    ctx.scale = scale


def _attribute_attention_bwd(ctx: Any, grad_out: Tensor) -> tuple[Any, ...]:
    attrs, concepts_v = ctx.saved_tensors
    grad_a, grad_cv = attribute_attention_backward(grad_out, attrs, concepts_v, ctx.scale)
    return grad_a, grad_cv, None


@functools.cache
def triton_ops() -> TritonOps:
    """Register the three operators once per process (imports triton) and return them."""
    # Without CUDA the kernels can only run in the interpreter, whichever mode is active at registration.
    on_gpu = torch.cuda.is_available() and not interpreting()
    make = torch.library.triton_op if on_gpu else torch.library.custom_op
    ops = []
    for name, impl, fake, setup, bwd in (
        ("vci_patch_select", _patch_select, _patch_select_fake, _patch_select_setup, _patch_select_bwd),
        ("vci_concept_attention", _concept_attention, _concept_attention_fake, _concept_attention_setup,
         _concept_attention_bwd),
        ("vci_attribute_attention", _attribute_attention, _attribute_attention_fake, _attribute_attention_setup,
         _attribute_attention_bwd),
    ):
        op = make(f"{NAMESPACE}::{name}", impl, mutates_args=())
        # Explicit shape functions: FakeTensor propagation never has to trace a kernel launch.
        op.register_fake(fake)
        op.register_autograd(bwd, setup_context=setup)
        ops.append(op)
    return TritonOps(*ops)
