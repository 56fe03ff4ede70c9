"""Post-processing: thresholding, tight boxes, GRES no-target handling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lvg.core.postprocess import Prediction, box_from_mask, mask_from_prob, postprocess
from lvg.core.preprocess import letterbox_geometry


def test_box_worked_examples() -> None:
    m = np.zeros((5, 7), dtype=bool)
    assert box_from_mask(m) is None
    m[1, 2] = True  # single pixel at row 1, col 2 -> x1=2, y1=1, x2=3, y2=2
    assert box_from_mask(m) == (2, 1, 3, 2)
    m[4, 6] = True  # bottom-right corner -> box reaches the image edges (7, 5)
    assert box_from_mask(m) == (2, 1, 7, 5)
    assert all(type(v) is int for v in box_from_mask(m))


@settings(max_examples=200, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 30), st.integers(1, 30))))
def test_box_is_tight_and_contains_mask(mask: np.ndarray) -> None:
    box = box_from_mask(mask)
    if not mask.any():
        assert box is None
        return
    assert box is not None
    x1, y1, x2, y2 = box
    h, w = mask.shape
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    inside = np.zeros_like(mask)
    inside[y1:y2, x1:x2] = True
    assert not (mask & ~inside).any()  # contains every mask pixel
    # tight: each edge row / column of the box holds a mask pixel
    assert mask[y1, x1:x2].any() and mask[y2 - 1, x1:x2].any()
    assert mask[y1:y2, x1].any() and mask[y1:y2, x2 - 1].any()


def test_threshold_is_strict() -> None:
    lb = letterbox_geometry(4, 4, 4)  # identity geometry
    prob = np.array([[0.34, 0.35, 0.36, 1.0]] * 4, dtype=np.float32)
    mask = mask_from_prob(prob, lb, threshold=0.35)
    assert mask[0].tolist() == [False, False, True, True]
    # float32 0.35 vs python 0.35: the comparison is in float32 so an exact 0.35 pixel is not in the mask
    assert not mask_from_prob(np.full((4, 4), np.float32(0.35)), lb, 0.35).any()


def test_postprocess_ris() -> None:
    # 8x4 image (w=8, h=4) on an 8x8 canvas: valid rows 2..5. Probability 0.9 on canvas columns 2..4.
    lb = letterbox_geometry(8, 4, 8)
    prob = np.zeros((8, 8), dtype=np.float32)
    prob[2:6, 2:5] = 0.9
    pred = postprocess(prob, lb)
    assert isinstance(pred, Prediction)
    assert pred.mask.shape == (4, 8) and pred.prob.shape == (4, 8) and pred.prob.dtype == np.float32
    assert pred.box == (2, 0, 5, 4)
    assert pred.score == pytest.approx(0.9, rel=1e-6)
    assert not pred.no_target and pred.no_target_prob is None


def test_postprocess_scaled_map() -> None:
    # a 120x120-style map at 1/4 of the canvas: 40x20 image, 80x80 canvas, 20x20 map.
    lb = letterbox_geometry(40, 20, 80)  # new 80x40, pad_y 20 -> map rows 5..14
    prob = np.zeros((20, 20), dtype=np.float32)
    prob[5:15, 10:20] = 1.0  # right half of the image
    pred = postprocess(prob, lb, mask_threshold=0.5)
    # image column x has its centre at canvas x' = (x + 0.5) * 2, map position x' / 4 - 0.5:
    # x = 19 -> 9.25, value 0.25 * prob[10] = 0.25 (out); x = 20 -> 9.75, value 0.75 (in).
    assert pred.box == (20, 0, 40, 20)
    assert pred.mask[:, 20:].all() and not pred.mask[:, :20].any()


def test_postprocess_empty_mask() -> None:
    lb = letterbox_geometry(10, 10, 10)
    pred = postprocess(np.full((10, 10), 0.1, dtype=np.float32), lb)
    assert pred.box is None and pred.score == 0.0 and not pred.mask.any() and not pred.no_target


@pytest.mark.parametrize(
    ("logit", "no_target"),
    [(3.0, True), (0.1, True), (0.0, False), (-2.0, False), (800.0, True), (-800.0, False)],
)
def test_postprocess_no_target(logit: float, no_target: bool) -> None:
    # sigmoid(0) = 0.5, not > 0.5: a tie is "has a target"
    lb = letterbox_geometry(6, 6, 6)
    prob = np.full((6, 6), 0.8, dtype=np.float32)
    pred = postprocess(prob, lb, no_target_logit=logit, no_target_threshold=0.5)
    assert pred.no_target is no_target
    assert pred.no_target_prob == pytest.approx(1.0 / (1.0 + np.exp(-np.clip(logit, -500, 500))), abs=1e-12)
    if no_target:
        assert pred.box is None and not pred.mask.any() and pred.score == 0.0
    else:
        assert pred.box == (0, 0, 6, 6) and pred.score == pytest.approx(0.8, rel=1e-6)
    np.testing.assert_allclose(pred.prob, 0.8, rtol=1e-6)  # the map is kept either way


def test_the_box_is_the_region_holding_the_peak_not_the_largest() -> None:
    """A confident small blob beside a larger, fainter one on another object: the answer is the confident one."""
    lb = letterbox_geometry(20, 10, 20)  # 20x10 image on a 20x20 canvas: image rows 5..14
    prob = np.zeros((20, 20), dtype=np.float32)
    prob[5:15, 0:10] = 0.5  # 100 px, faint
    prob[6:9, 14:17] = 0.9  # 9 px, confident
    pred = postprocess(prob, lb)
    assert pred.box == (14, 1, 17, 4)
    assert [r.area for r in pred.regions] == [9, 100]  # the main region first, then the others largest first
    assert pred.regions[0].peak == pytest.approx(0.9)
    prob[6:9, 14:17] = 0.5  # equal peaks: the larger leads, as before
    assert postprocess(prob, lb).box == (0, 0, 10, 10)


def test_a_speck_never_leads_however_confident() -> None:
    lb = letterbox_geometry(40, 40, 40)
    prob = np.zeros((40, 40), dtype=np.float32)
    prob[0:20, 0:20] = 0.6  # 400 px
    prob[30, 30] = 0.99  # 1 px: under 5% of the largest region, dropped
    pred = postprocess(prob, lb)
    assert pred.box == (0, 0, 20, 20) and len(pred.regions) == 1 and pred.mask[30, 30]
