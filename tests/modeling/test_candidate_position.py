"""Candidate-relative positions (``HeadConfig.candidate_positions``): they grow a model without changing it,
then move each expression's map towards one side of what that map covers, and only there."""

from __future__ import annotations

import torch

from lvg.modeling import build_model
from lvg.modeling.candidate_position import MAX_OFFSET, MIN_SPREAD, CandidatePosition, cell_ticks
from tests.modeling.conftest import grow_unchanged, make_inputs


def test_candidate_positions_grow_a_model_without_changing_it_then_learn():
    """lvg-tiny-xy-stem-relpos with lvg-tiny-xy-stem-fine's weights predicts exactly what that model does (the
    coefficients start at zero), and the coefficients get a gradient from the first step."""
    fine, model, (image, ids, mask) = grow_unchanged("lvg-tiny-xy-stem-fine", "lvg-tiny-xy-stem-relpos",
                                                     "candidate_position.", seed=21)
    assert [n for n, _ in model.named_parameters() if n.startswith("candidate_position.")] == [
        "candidate_position.coefficients.weight"]
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    opt.zero_grad()
    model(image, ids, mask)["prob"].square().mean().backward()
    assert model.candidate_position.coefficients.weight.grad.abs().sum() > 0
    opt.step()
    model.eval()
    with torch.no_grad():
        assert (model(image, ids, mask)["logits"] - fine(image, ids, mask)["logits"]).abs().amax() > 0


def _blobs(side: int, centres: list[tuple[int, int]], radius: int = 3) -> torch.Tensor:
    """A ``(side, side)`` logit map: +6 on a square of ``radius`` around each (row, col), -8 elsewhere."""
    m = torch.full((side, side), -8.0)
    for r, c in centres:
        m[r - radius:r + radius + 1, c - radius:c + radius + 1] = 6.0
    return m


def test_a_left_coefficient_favours_the_leftmost_candidate_and_leaves_the_background():
    """Three candidates in a row, all left of the image's centre: a negative x coefficient raises the leftmost
    one's logits, lowers the rightmost one's, and barely touches cells the map does not cover. The same row
    moved right gives the same ranking (the offsets are relative to the candidates, not the image)."""
    side, emb_dim = 40, 8
    box = CandidatePosition(side, emb_dim)
    with torch.no_grad():
        box.coefficients.weight.zero_()
        box.coefficients.weight[0, 0] = -1.0  # a_x = -emb[0]
    emb = torch.zeros(1, 1, emb_dim)
    emb[0, 0, 0] = 2.0  # a_x = -2: "left"
    for shift in (0, 12):
        cols = [5 + shift, 11 + shift, 17 + shift]
        logits = _blobs(side, [(20, c) for c in cols])[None, None]  # (1, 1, 40, 40)
        out = box(logits, emb)[0, 0]  # (40, 40)
        left, mid, right = (out[20, c].item() for c in cols)
        assert left > 1.0 and right < -1.0 and abs(mid) < 0.5, (shift, left, mid, right)
        assert out[5, 35].abs().item() < 1e-2 and out[35, 2].abs().item() < 1e-2  # background (p ~ 3e-4)
    emb[0, 0, 0] = -2.0  # "right": the other way round
    out = box(_blobs(side, [(20, c) for c in (5, 11, 17)])[None, None], emb)[0, 0]
    assert out[20, 17] > 1.0 and out[20, 5] < -1.0


def test_each_expression_reads_its_own_map_and_embedding():
    """Expression j's correction depends on map j and embedding j only; no gradient reaches the map through
    the weights it computes (they are the map's own detached probabilities)."""
    torch.manual_seed(22)
    box = CandidatePosition(16, 6)
    with torch.no_grad():
        box.coefficients.weight.normal_()
    logits, emb = torch.randn(2, 3, 16, 16) * 3, torch.randn(2, 3, 6)
    base = box(logits, emb)
    other = logits.clone()
    other[:, 1] += 1.0
    moved = (box(other, emb) - base).abs()
    assert moved[:, 1].amax() > 0 and moved[:, [0, 2]].amax() == 0
    emb2 = emb.clone()
    emb2[:, 2] += 1.0
    moved = (box(logits, emb2) - base).abs()
    assert moved[:, 2].amax() > 0 and moved[:, :2].amax() == 0
    leaf = logits.clone().requires_grad_()
    box(leaf, emb).sum().backward()
    assert leaf.grad is None or leaf.grad.abs().amax() == 0


def test_the_same_as_the_offsets_of_every_cell_from_the_weighted_centroid():
    """The box works per axis (column and row sums); it equals the direct form: every cell's (x, y), the
    map-weighted centroid and spread over all cells, offsets in spreads clamped at 3, weighed and gated."""
    torch.manual_seed(24)
    side, emb_dim = 24, 5
    box = CandidatePosition(side, emb_dim)
    with torch.no_grad():
        box.coefficients.weight.normal_()
    logits, emb = torch.randn(2, 3, side, side) * 4, torch.randn(2, 3, emb_dim)
    p = logits.sigmoid().reshape(2, 3, -1)  # (B, J, hw)
    u = cell_ticks(side)
    y, x = torch.meshgrid(u, u, indexing="ij")
    cells = torch.stack([x.flatten(), y.flatten()], dim=1)  # (hw, 2), row-major
    mass = p.sum(-1, keepdim=True) + 1e-6
    offset = cells - (p @ cells / mass)[:, :, None]  # (B, J, hw, 2)
    spread = ((p[..., None] * offset.square()).sum((-2, -1)) / mass[..., 0]).sqrt()
    z = (offset / (spread[..., None, None] + MIN_SPREAD)).clamp(-MAX_OFFSET, MAX_OFFSET)
    a = emb @ box.coefficients.weight.T  # (B, J, 2)
    direct = (p * (z @ a[..., None])[..., 0]).reshape(2, 3, side, side)
    torch.testing.assert_close(box(logits, emb).detach(), direct, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(u[[0, -1]], torch.tensor([-1 + 1 / side, 1 - 1 / side]))


def test_candidate_positions_run_in_a_model_cast_to_bf16():
    """``cast_model(..., "bf16")`` (``lvg eval``, the torch backend) turns the coefficients and the cell
    centres bfloat16; the box still computes in float32 and gives the fp32 model's maps within bf16 rounding."""
    from lvg.modeling.runner import cast_model

    torch.manual_seed(23)
    model = build_model("lvg-tiny-xy-stem-relpos").eval()
    with torch.no_grad():
        model.candidate_position.coefficients.weight.normal_(std=0.5)
        image, ids, mask = make_inputs(model.cfg, batch=2)
        ref = model(image, ids, mask)["prob"]
        cast_model(model, "bf16")
        out = model(image.bfloat16(), ids, mask)["prob"]
    assert out.dtype == torch.float32 and (out - ref).abs().mean() < 0.02
