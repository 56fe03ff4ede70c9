"""The mask refiner (``HeadConfig.mask_refine``): it grows a model without changing it, then corrects each
expression's map from that map and the pixels under it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lvg.config import get_config
from lvg.errors import ConfigError
from lvg.modeling import build_model
from lvg.modeling.mask_refiner import MaskRefiner
from tests.modeling.conftest import assert_zero_start_learns, grow_unchanged, make_inputs


def test_refiner_grows_a_model_without_changing_it_then_learns():
    """lvg-tiny-xy-stem-refine with lvg-tiny-xy-stem-fine's weights predicts exactly what that model does
    (the last convolution starts at zero); the last convolution learns from the first step, the ones before
    it from the second."""
    fine, model, (image, ids, mask) = grow_unchanged("lvg-tiny-xy-stem-fine", "lvg-tiny-xy-stem-refine",
                                                     "mask_refiner.", seed=11)
    model.train()
    inner = [p for n, p in model.named_parameters() if n.startswith(("mask_refiner.from_", "mask_refiner.mid."))]
    assert_zero_start_learns(model, (image, ids, mask), model.mask_refiner.out.weight, inner, lr=0.5)
    model.eval()
    with torch.no_grad():
        assert (model(image, ids, mask)["logits"] - fine(image, ids, mask)["logits"]).abs().amax() > 0


def test_refiner_reads_each_expressions_map_and_the_pixels_near_a_cell():
    """Expression j's correction depends on map j only (not on the other expressions'), and on the pixel
    features within its receptive field (3 + 5 + 3 cells: 4 cells either side), not beyond."""
    torch.manual_seed(12)
    refiner = MaskRefiner(stem_channels=4, hidden=6).eval()
    with torch.no_grad():
        refiner.out.weight.normal_()
        logits, pixels = torch.randn(2, 3, 40, 40), torch.randn(2, 4, 40, 40)
        base = refiner(logits, pixels)  # (2, 3, 40, 40)
        other = logits.clone()
        other[:, 1] += 1.0  # expression 1's map only
        moved = (refiner(other, pixels) - base).abs()
        assert moved[:, 1].amax() > 0 and moved[:, [0, 2]].amax() == 0
        near = pixels.clone()
        near[:, :, 20, 20] += 3.0  # one cell's pixel features
        moved = (refiner(logits, near) - base).abs()  # every expression reads them
    assert all(moved[:, j, 16:25, 16:25].amax() > 0 for j in range(3))
    outside = moved.clone()
    outside[..., 16:25, 16:25] = 0
    assert outside.amax() == 0


def test_refiner_needs_the_image_stem_and_a_channel_count():
    base = get_config("lvg-tiny-xy")
    with pytest.raises(ConfigError, match="mask_refine reads the image stem"):
        base.replace(head=dataclasses.replace(base.head, mask_refine=4))
    stem = get_config("lvg-tiny-xy-stem")
    with pytest.raises(ConfigError, match="mask_refine must be 0"):
        stem.replace(head=dataclasses.replace(stem.head, mask_refine=-1))
    coarse = build_model(stem.replace(head=dataclasses.replace(stem.head, mask_refine=4)))  # at 1/4 scale too
    with torch.no_grad():
        assert coarse(*make_inputs(coarse.cfg, batch=1))["logits"].shape[-1] == 120
