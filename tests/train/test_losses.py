"""Losses against independent scalar (pure-Python ``math``) computations of the formulas."""

from __future__ import annotations

import math

import pytest
import torch

from lvg.train.losses import EPS, bce_loss, contrastive_loss, dice_loss, grounding_loss, no_target_loss


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _hand_contrastive(t: list[list[float]], z: list[list[list[float]]], kind: str, gamma: float, tau: float) -> float:
    """Eq. 8 and Table 6's alternatives, one (sample, expression) pair at a time."""
    b, n = len(z), len(z[0])
    total = 0.0
    for i in range(b):
        negs = [_cos(t[i], z[k][j]) for k in range(b) if k != i for j in range(n)]
        for e in range(n):
            s = _cos(t[i], z[i][e])
            if kind == "pos_margin":
                term = -(min(1.0, gamma + s) / tau - math.log(sum(math.exp(x / tau) for x in negs)))
            elif kind == "infonce":
                term = -math.log(math.exp(s / tau) / (math.exp(s / tau) + sum(math.exp(x / tau) for x in negs)))
            elif kind == "arcface":
                p = math.cos(math.acos(s) + gamma)
                term = -math.log(math.exp(p / tau) / (math.exp(p / tau) + sum(math.exp(x / tau) for x in negs)))
            else:  # triplet
                term = sum(max(0.0, gamma - s + x) for x in negs) / len(negs)
            total += term
    return total / (b * n)


@pytest.mark.parametrize("kind", ["pos_margin", "infonce", "triplet", "arcface"])
def test_contrastive_matches_hand_computation(kind: str) -> None:
    g = torch.Generator().manual_seed(3)
    t = torch.randn(3, 5, generator=g, dtype=torch.float64)
    z = torch.randn(3, 2, 5, generator=g, dtype=torch.float64)
    got = contrastive_loss(t, z, kind=kind, gamma=0.2, tau=0.1).item()
    want = _hand_contrastive(t.tolist(), z.tolist(), kind, 0.2, 0.1)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_pos_margin_clips_at_one() -> None:
    # Positives almost equal to the anchor: gamma + s > 1, so the numerator is exp(1 / tau) exactly.
    t = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    z = torch.tensor([[[1.0, 0.05, 0.0]], [[0.05, 1.0, 0.0]]])
    loss = contrastive_loss(t, z, kind="pos_margin", gamma=0.2, tau=0.1)
    s_neg = [_cos([1, 0, 0], [0.05, 1, 0]), _cos([0, 1, 0], [1, 0.05, 0])]
    want = sum(-(1.0 / 0.1 - math.log(math.exp(s / 0.1))) for s in s_neg) / 2
    assert loss.item() == pytest.approx(want, rel=1e-5)


def test_pos_margin_positive_gradient_is_zero_when_clipped() -> None:
    # B = 2, N = 1: z0 is sample 0's positive (clipped: 0.2 + cos > 1, so no gradient through it) and
    # sample 1's only negative. Its whole gradient must therefore be that of sample 1's denominator term.
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z0 = torch.tensor([1.0, 0.1], requires_grad=True)
    z1 = torch.tensor([0.3, 1.0])
    loss = contrastive_loss(t, torch.stack([z0, z1])[:, None], kind="pos_margin", gamma=0.2, tau=0.1)
    loss.backward()
    z0b = z0.detach().clone().requires_grad_(True)
    # sample 1's term / 2 (mean over B): log exp(cos(t1, z0)/tau) = cos(t1, z0)/tau
    (torch.nn.functional.cosine_similarity(t[1], z0b, dim=0) / 0.1 / 2).backward()
    assert torch.allclose(z0.grad, z0b.grad, atol=1e-6)


@pytest.mark.parametrize("kind", ["pos_margin", "infonce", "triplet", "arcface"])
def test_contrastive_skipped_for_batch_one_or_no_latents(kind: str) -> None:
    assert contrastive_loss(torch.randn(1, 4), torch.randn(1, 2, 4), kind=kind).item() == 0.0
    assert contrastive_loss(torch.randn(3, 4), torch.randn(3, 0, 4), kind=kind).item() == 0.0


def test_bce_and_dice_match_hand_computation() -> None:
    p = torch.tensor([[[0.9, 0.2], [0.0, 1.0]]])
    y = torch.tensor([[[1.0, 0.0], [0.5, 1.0]]])
    flat_p, flat_y = [0.9, 0.2, 0.0, 1.0], [1.0, 0.0, 0.5, 1.0]
    clamp = [min(max(v, EPS), 1 - EPS) for v in flat_p]
    want_bce = -sum(t * math.log(q) + (1 - t) * math.log(1 - q) for q, t in zip(clamp, flat_y)) / 4
    assert bce_loss(p, y).item() == pytest.approx(want_bce, rel=1e-5)
    inter = sum(a * b for a, b in zip(flat_p, flat_y))
    want_dice = 1 - (2 * inter + 1) / (sum(flat_p) + sum(flat_y) + 1)
    assert dice_loss(p, y).item() == pytest.approx(want_dice, rel=1e-6)


def test_bce_is_finite_in_half_precision_inputs() -> None:
    p = torch.tensor([[[0.0, 1.0]]], dtype=torch.bfloat16)
    y = torch.tensor([[[1.0, 0.0]]])
    value = bce_loss(p, y)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert value.item() == pytest.approx(-math.log(EPS), rel=1e-3)


def test_grounding_loss_weights_and_no_target() -> None:
    g = torch.Generator().manual_seed(0)
    out = {
        "prob": torch.rand(2, 4, 4, generator=g),
        "text_embedding": torch.randn(2, 3, generator=g),
        "latent_embeddings": torch.randn(2, 2, 3, generator=g),
        "no_target_logit": torch.tensor([2.0, -1.0]),
    }
    target = torch.ones(2, 4, 4)
    nt = torch.tensor([1.0, 0.0])
    parts = grounding_loss(out, target, nt, bce=2.0, dice=0.5, contrastive=1.0, no_target_weight=0.5)
    # The no-target sample's segmentation target is the empty mask.
    eff = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)])
    assert parts["bce"].item() == pytest.approx(bce_loss(out["prob"], eff).item())
    assert parts["dice"].item() == pytest.approx(dice_loss(out["prob"], eff).item())
    want_nt = (-math.log(1 / (1 + math.exp(-2.0))) - math.log(1 - 1 / (1 + math.exp(1.0)))) / 2
    assert parts["no_target"].item() == pytest.approx(want_nt, rel=1e-6)
    want = parts["contrastive"] + 2 * parts["bce"] + 0.5 * parts["dice"] + 0.5 * parts["no_target"]
    assert parts["total"].item() == pytest.approx(want.item(), rel=1e-6)
    assert no_target_loss(torch.tensor([0.0]), torch.tensor([1.0])).item() == pytest.approx(math.log(2))


@pytest.mark.parametrize("w", [0.0, 0.25])
def test_grounding_loss_no_target_mask_weight(w: float) -> None:
    g = torch.Generator().manual_seed(1)
    out = {"prob": torch.rand(3, 4, 4, generator=g), "text_embedding": torch.randn(3, 3, generator=g),
           "latent_embeddings": torch.randn(3, 2, 3, generator=g), "no_target_logit": torch.zeros(3)}
    target = (torch.rand(3, 4, 4, generator=g) > 0.5).float()
    nt = torch.tensor([0.0, 1.0, 0.0])
    parts = grounding_loss(out, target, nt, no_target_mask_weight=w)
    # Each sample's loss on its own, the no-target one against the empty mask, weighed 1 / w / 1.
    eff = target * torch.tensor([1.0, 0.0, 1.0])[:, None, None]
    bce = [bce_loss(out["prob"][i:i + 1], eff[i:i + 1]).item() for i in range(3)]
    dice = [dice_loss(out["prob"][i:i + 1], eff[i:i + 1]).item() for i in range(3)]
    assert parts["bce"].item() == pytest.approx((bce[0] + w * bce[1] + bce[2]) / (2 + w), rel=1e-6)
    assert parts["dice"].item() == pytest.approx((dice[0] + w * dice[1] + dice[2]) / (2 + w), rel=1e-6)
    if w == 0.0:  # the no-target sample's map gets no gradient from the mask losses
        prob = out["prob"].clone().requires_grad_(True)
        total = grounding_loss({**out, "prob": prob}, target, nt, contrastive=0.0, no_target_mask_weight=0.0)["total"]
        total.backward()
        assert prob.grad[1].abs().max().item() == 0.0 and prob.grad[0].abs().max().item() > 0


def test_grounding_loss_without_gres_head_has_no_no_target_term() -> None:
    out = {"prob": torch.full((1, 2, 2), 0.5), "text_embedding": torch.randn(1, 3),
           "latent_embeddings": torch.randn(1, 2, 3)}
    parts = grounding_loss(out, torch.zeros(1, 2, 2), torch.zeros(1))
    assert "no_target" not in parts
    assert parts["contrastive"].item() == 0.0
    assert parts["total"].item() == pytest.approx(2 * math.log(2) + 0.5 * (1 - 1 / 3), rel=1e-6)


def test_object_pick_loss_is_the_cross_entropy_of_the_objects_mean_logits() -> None:
    from lvg.train.losses import object_pick_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 6, 6, generator=g) * 5
    objects = torch.zeros(3, 6, 6, dtype=torch.int64)
    objects[:, 0:2, 0:2] = 1
    objects[:, 3:6, 3:5] = 2
    objects[0, 0, 5] = 4  # object 3 absent in sample 0: no candidate
    objects[1, 5, 0] = 3
    target = torch.tensor([2, -100, 1])  # sample 1 takes no part (no target, or several)
    want = []
    for b in (0, 2):
        for j in range(2):
            ks = [k for k in range(1, 5) if (objects[b] == k).any()]
            means = torch.stack([logits[b, j][objects[b] == k].mean() for k in ks])
            want.append(-torch.log_softmax(means, 0)[ks.index(int(target[b]))])
    assert object_pick_loss(logits, objects, target).item() == pytest.approx(torch.stack(want).mean().item(), rel=1e-5)


def test_object_pick_loss_pulls_a_wrong_pick_and_leaves_a_right_one() -> None:
    from lvg.train.losses import object_pick_loss

    objects = torch.zeros(1, 8, 8, dtype=torch.int64)
    objects[0, :2, :2], objects[0, 5:, 5:] = 1, 2
    for target, wrong_grad in ((1, True), (2, False)):
        logits = torch.full((1, 1, 8, 8), -30.0)
        logits[0, 0, 5:, 5:] = 40.0  # the map is confidently on object 2
        logits.requires_grad_(True)
        object_pick_loss(logits, objects, torch.tensor([target])).backward()
        grad = logits.grad[0, 0]
        assert (grad[:2, :2].abs().sum() > 0.5) == wrong_grad  # a unit pull spread over the target's pixels
        assert grad[objects[0] == 0].abs().max() == 0  # the background is not an object


def test_object_pick_loss_without_a_taking_part_sample_is_zero_with_a_graph() -> None:
    from lvg.train.losses import object_pick_loss

    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    objects = torch.ones(2, 4, 4, dtype=torch.int64)
    loss = object_pick_loss(logits, objects, torch.tensor([-100, 5]))  # 5: not an object of the image
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None and logits.grad.abs().max() == 0
    with pytest.raises(ValueError, match="do not fit"):
        object_pick_loss(logits, objects[:, :2], torch.tensor([1, 1]))
