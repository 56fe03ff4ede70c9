"""The chained Triton VCI (``vci_triton`` / the ``lvg::vci_*`` operators) against ``vci_reference``, and both
against an independent loop implementation (the reference's check runs without triton)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lvg.kernels import get_vci, visual_concept_injection
from lvg.kernels.attribute_attention import attribute_attention_reference
from lvg.kernels.concept_attention import concept_attention_reference
from lvg.kernels.patch_select import patch_select_reference
from lvg.kernels.vci import vci_reference
from tests.kernels.conftest import (
    DEVICE,
    DTYPES,
    ON_GPU,
    assert_close,
    assert_mask_matches,
    gpu_only,
    randn,
    requires_triton,
)

# (batch, patches, width, concepts, attributes): awkward sizes, then the paper's.
SIZES = [(2, 899, 72, 37, 13), (1, 900, 768, 100, 14)]


def _inputs(rng, b, n, d, nc, na, dtype=torch.float32, grad=False):
    xs = (randn(rng, b, n, d, dtype=dtype), randn(rng, b, d, dtype=dtype), randn(rng, b, na, d, dtype=dtype),
          randn(rng, nc, d, dtype=dtype))
    return tuple(x.requires_grad_(grad) for x in xs)


def _expected_given_mask(v, attrs, concepts, mask):
    """The reference chain on the Triton mask: the masks may differ on patches tied with the mean."""
    scale = v.shape[-1] ** -0.5
    return attribute_attention_reference(attrs, concept_attention_reference(v, mask, concepts, scale), scale)


def _naive_vci(v, t, a, c):
    """Eq. 4-6 written out with Python loops over float64 numpy arrays, independent of both paths."""
    v, t, a, c = (x.detach().cpu().double().numpy() for x in (v, t, a, c))
    b, n, d = v.shape
    scale = d**-0.5
    out, masks = np.zeros_like(a), np.zeros((b, n), dtype=bool)
    for i in range(b):
        scores = v[i] @ t[i]
        masks[i] = scores >= scores.mean()
        sel = v[i][masks[i]]  # (n_sel, d)
        cv = np.zeros((len(c), d))
        for j in range(len(c)):
            w = np.exp(sel @ c[j] * scale - (sel @ c[j] * scale).max())
            cv[j] = (w / w.sum()) @ sel
        for k in range(len(c)):
            w = np.exp(a[i] @ cv[k] * scale - (a[i] @ cv[k] * scale).max())  # over attributes
            out[i] += np.outer(w / w.sum(), cv[k])
    return torch.from_numpy(out), torch.from_numpy(masks)


def test_the_reference_stays_fp32_under_bf16_autocast(rng):
    """Autocast runs einsums in bf16 whatever their inputs' dtype. The VCI's softmaxes must not: a trained
    model's activations are large, half-precision logits then tie, and the gradients explode (norms of
    1e5-1e10 through the concept injectors in bf16 training runs)."""
    inputs = _inputs(rng, *SIZES[0], grad=True)
    results = []
    for autocast in (False, True):
        for x in inputs:
            x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = vci_reference(*inputs)
        out.attrs.float().square().sum().backward()
        v, _, attrs, concepts = inputs  # t_cls only selects patches: no gradient
        results.append((out.attrs.detach(), out.mask, [x.grad.clone() for x in (v, attrs, concepts)]))
    (plain, plain_mask, plain_grads), (cast, cast_mask, cast_grads) = results
    assert cast.dtype == torch.float32 and torch.equal(cast_mask, plain_mask)
    torch.testing.assert_close(cast, plain, rtol=1e-6, atol=1e-6)
    for a, b in zip(cast_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["reference", pytest.param("triton", marks=requires_triton)])
def test_matches_a_loop_implementation(impl, rng):
    v, t, a, c = _inputs(rng, 2, 11, 6, 3, 4)
    got = visual_concept_injection(v, t, a, c, impl=impl)
    want, want_mask = _naive_vci(v, t, a, c)
    assert torch.equal(got.mask.cpu(), want_mask)
    torch.testing.assert_close(got.attrs.cpu().double(), want, atol=1e-5, rtol=1e-5)


@requires_triton
@pytest.mark.parametrize("size", SIZES)
def test_forward_and_backward_match_the_reference(size, rng):
    v, t, a, c = _inputs(rng, *size, grad=True)
    out = get_vci("triton")(v, t, a, c)
    scores_ref, mask_ref = patch_select_reference(v, t)
    assert_mask_matches(out.mask, scores_ref, mask_ref)
    want = _expected_given_mask(v, a, c, out.mask)
    assert_close(out.attrs, want, torch.float32, f"size={size}")
    g = randn(rng, *out.attrs.shape)
    got_grads = torch.autograd.grad(out.attrs, (v, t, a, c), g, allow_unused=True)
    want_grads = torch.autograd.grad(want, (v, t, a, c), g, allow_unused=True)
    # t_cls only reaches the output through the (step-function) mask: no gradient on either path.
    assert got_grads[1] is None and want_grads[1] is None
    for name, x, w in zip("vac", got_grads[::2] + got_grads[3:], want_grads[::2] + want_grads[3:]):
        torch.testing.assert_close(x, w, atol=1e-5, rtol=1e-4, msg=lambda m, name=name: f"grad {name}: {m}")


@requires_triton
@pytest.mark.parametrize("rule", ["none", "topk"])
def test_other_threshold_rules(rule, rng):
    v, t, a, c = _inputs(rng, 2, 60, 24, 5, 3)
    got = visual_concept_injection(v, t, a, c, rule=rule, topk=7, impl="triton")
    want = vci_reference(v, t, a, c, rule=rule, topk=7)
    assert torch.equal(got.mask, want.mask)
    assert_close(got.attrs, want.attrs, torch.float32)


@requires_triton
def test_operators_pass_opcheck(rng):
    """Schema, fake (meta) functions, autograd registration and AOT dispatch of the three operators."""
    get_vci("triton")  # registers lvg::vci_*
    v, t, a, _ = _inputs(rng, 2, 20, 16, 3, 5, grad=True)
    c = randn(rng, 3, 16).requires_grad_()
    mask = patch_select_reference(v, t)[1]
    cv = randn(rng, 2, 3, 16).requires_grad_()
    ops = torch.ops.lvg
    torch.library.opcheck(ops.vci_patch_select.default, (v, t))
    torch.library.opcheck(ops.vci_concept_attention.default, (v, mask, c, 0.25))
    torch.library.opcheck(ops.vci_attribute_attention.default, (a, cv, 0.25))


@requires_triton
def test_compile_and_export_see_the_operators(rng):
    vci = get_vci("triton")
    v, t, a, c = _inputs(rng, 2, 40, 16, 5, 3)

    def f(v, t, a, c):
        out = vci(v, t, a, c)
        return out.attrs, out.mask

    # fullgraph: the operators trace without a graph break (on CPU through the aot_eager backend).
    compiled = torch.compile(f, backend="inductor" if ON_GPU else "aot_eager", fullgraph=True)
    got, got_mask = compiled(v, t, a, c)
    want, want_mask = f(v, t, a, c)
    assert torch.equal(got_mask, want_mask)
    assert_close(got, want, torch.float32)

    class Vci(torch.nn.Module):
        def forward(self, v, t, a, c):
            return vci(v, t, a, c).attrs

    program = torch.export.export(Vci(), (v, t, a, c))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {"lvg.vci_patch_select.default", "lvg.vci_concept_attention.default",
            "lvg.vci_attribute_attention.default"} <= targets


@requires_triton
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_export_traces_the_reference(tmp_path, rng):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    vci = get_vci("triton")

    class Vci(torch.nn.Module):
        def __init__(self, concepts):
            super().__init__()
            self.concepts = torch.nn.Parameter(concepts)

        def forward(self, v, t, a):
            return vci(v, t, a, self.concepts).attrs

    v, t, a, c = (x.cpu() for x in _inputs(rng, 2, 40, 16, 5, 3))
    path = tmp_path / "vci.onnx"
    torch.onnx.export(Vci(c), (v, t, a), str(path), dynamo=False, input_names=["v", "t", "a"])
    graph = onnx.load(str(path)).graph
    assert all(node.domain in ("", "ai.onnx") for node in graph.node), "a custom op leaked into the ONNX graph"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"v": v.numpy(), "t": t.numpy(), "a": a.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), vci_reference(v, t, a, c).attrs, atol=1e-5, rtol=1e-4)


@requires_triton
def test_tiny_model_with_triton_matches_reference():
    """The whole model, built once per implementation with the same weights, gives the same outputs."""
    from lvg.modeling import build_model
    from tests.modeling.conftest import make_inputs

    torch.manual_seed(0)
    ref = build_model("lvg-tiny", impl="reference").eval()
    tri = build_model("lvg-tiny", impl="triton").eval()
    assert tri.kernel_impl == "triton"
    tri.load_state_dict(ref.state_dict())
    image, ids, mask = make_inputs(ref.cfg, batch=1)
    ref, tri = ref.to(DEVICE), tri.to(DEVICE)
    image, ids, mask = image.to(DEVICE), ids.to(DEVICE), mask.to(DEVICE)
    with torch.no_grad():
        want, got = ref(image, ids, mask), tri(image, ids, mask)
    assert torch.equal(got["patch_mask"], want["patch_mask"])
    torch.testing.assert_close(got["prob"], want["prob"], atol=1e-5, rtol=1e-4)


@requires_triton
@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 8])
def test_gpu_dtypes_real_size(dtype, batch, rng):
    v, t, a, c = _inputs(rng, batch, 900, 768, 100, 14, dtype=dtype, grad=True)
    out = get_vci("triton")(v, t, a, c)
    scores_ref, mask_ref = patch_select_reference(v, t)
    assert_mask_matches(out.mask, scores_ref, mask_ref)
    want = _expected_given_mask(v, a, c, out.mask)
    assert_close(out.attrs, want, dtype, f"dtype={dtype}")
    g = randn(rng, *out.attrs.shape, dtype=dtype)
    got_grads = torch.autograd.grad(out.attrs, (v, a, c), g)
    want_grads = torch.autograd.grad(want, (v, a, c), g)
    for x, w in zip(got_grads, want_grads):
        assert_close(x, w, dtype)


@requires_triton
@pytest.mark.gpu
@gpu_only
def test_gpu_torch_compile_of_the_model(rng):
    from lvg.modeling import build_model
    from tests.modeling.conftest import make_inputs

    torch.manual_seed(0)
    model = build_model("lvg-tiny", impl="triton").eval().to(DEVICE)
    image, ids, mask = (x.to(DEVICE) for x in make_inputs(model.cfg, batch=2))
    with torch.no_grad():
        want = model(image, ids, mask)
        got = torch.compile(model, fullgraph=True)(image, ids, mask)
    assert torch.equal(got["patch_mask"], want["patch_mask"])
    torch.testing.assert_close(got["prob"], want["prob"], atol=1e-4, rtol=1e-3)
