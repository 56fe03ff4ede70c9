"""Letterbox geometry, image normalisation, mask letterboxing and its inverse."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lvg.config import PreprocessConfig
from lvg.core.preprocess import (
    Letterbox,
    letterbox_geometry,
    letterbox_mask,
    preprocess_batch,
    preprocess_image,
    unletterbox,
)


def test_geometry_worked_examples() -> None:
    # 640x427 -> scale 480/640 = 0.75, 427 * 0.75 = 320.25 -> 320, pad (480 - 320) // 2 = 80
    assert letterbox_geometry(640, 427, 480) == Letterbox(640, 427, 480, 0.75, 480, 320, 0, 80)
    # portrait 300x1000 -> scale 0.48, 300 * 0.48 = 144, pad (480 - 144) // 2 = 168
    assert letterbox_geometry(300, 1000, 480) == Letterbox(300, 1000, 480, 0.48, 144, 480, 168, 0)
    # 3x1000 -> 3 * 0.48 = 1.44 -> 1; 1000x3 -> 1 row; tiny images are enlarged
    assert letterbox_geometry(3, 1000, 480).new_w == 1
    assert letterbox_geometry(1000, 3, 480).new_h == 1
    lb = letterbox_geometry(1, 1, 480)
    assert (lb.new_w, lb.new_h, lb.pad_x, lb.pad_y, lb.scale) == (480, 480, 0, 0, 480.0)
    # odd padding: the extra column goes to the right (pad_x = (10 - 9) // 2 = 0)
    lb = letterbox_geometry(9, 10, 10)
    assert (lb.new_w, lb.pad_x) == (9, 0)


@given(st.integers(1, 5000), st.integers(1, 5000), st.integers(1, 1024))
def test_geometry_invariants(w: int, h: int, size: int) -> None:
    lb = letterbox_geometry(w, h, size)
    assert max(lb.new_w, lb.new_h) == size
    assert 1 <= lb.new_w <= size and 1 <= lb.new_h <= size
    assert lb.pad_x + lb.new_w <= size and lb.pad_y + lb.new_h <= size
    assert 0 <= (size - lb.new_w) - 2 * lb.pad_x <= 1  # centred
    assert 0 <= (size - lb.new_h) - 2 * lb.pad_y <= 1
    assert abs(lb.new_w - w * size / max(w, h)) <= 0.5 or lb.new_w == 1


def test_preprocess_values_and_padding() -> None:
    cfg = PreprocessConfig(size=8)
    # 8x4 image (w=8, h=4): no resize, pad 2 rows on top and bottom
    arr = np.zeros((4, 8, 3), dtype=np.uint8)
    arr[..., 0] = 255
    arr[..., 1] = 51  # 51/255 = 0.2 -> (0.2 - 0.5) / 0.5 = -0.6
    out, lb = preprocess_image(Image.fromarray(arr), cfg)
    assert out.shape == (3, 8, 8) and out.dtype == np.float32
    assert (lb.pad_x, lb.pad_y, lb.new_w, lb.new_h) == (0, 2, 8, 4)
    expected = np.broadcast_to(np.array([1.0, -0.6, -1.0])[:, None, None], (3, 4, 8))  # per channel
    np.testing.assert_allclose(out[:, 2:6], expected, atol=1e-6)
    np.testing.assert_array_equal(out[:, :2], -1.0)  # black padding, normalised
    np.testing.assert_array_equal(out[:, 6:], -1.0)


def test_preprocess_custom_mean_std() -> None:
    cfg = PreprocessConfig(size=4, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
    img = Image.new("RGB", (4, 4), (255, 255, 255))
    out, _ = preprocess_image(img, cfg)
    # (1 - mean) / std per channel
    np.testing.assert_allclose(out[:, 0, 0], [(1 - 0.1) / 0.5, (1 - 0.2) / 0.25, (1 - 0.3) / 2.0], rtol=1e-6)


BEIT3_NORM = ((0.5,) * 3, (0.5,) * 3)
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([BEIT3_NORM, IMAGENET_NORM]))
def test_preprocess_equals_the_formula_bit_for_bit(seed: int, norm: tuple) -> None:
    """Every pixel value and the padding come out exactly as ``(pixel / 255 - mean) / std`` in float32."""
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    cfg = PreprocessConfig(size=40, mean=norm[0], std=norm[1])
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    out, lb = preprocess_image(img, cfg)
    canvas = np.zeros((40, 40, 3), np.uint8)
    resized = img if (w, h) == (lb.new_w, lb.new_h) else img.resize((lb.new_w, lb.new_h), Image.Resampling.BICUBIC)
    canvas[lb.pad_y : lb.pad_y + lb.new_h, lb.pad_x : lb.pad_x + lb.new_w] = np.asarray(resized)
    mean = np.asarray(norm[0], np.float32)[:, None, None]
    std = np.asarray(norm[1], np.float32)[:, None, None]
    want = (canvas.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0) - mean) / std
    assert out.flags.c_contiguous and out.dtype == np.float32
    np.testing.assert_array_equal(out, want)


def test_preprocess_resizes_and_centres() -> None:
    cfg = PreprocessConfig(size=480)
    img = Image.new("RGB", (1000, 500), (255, 255, 255))
    out, lb = preprocess_image(img, cfg)
    assert (lb.new_w, lb.new_h, lb.pad_y) == (480, 240, 120)
    white = out[0] > 0.99
    rows = np.flatnonzero(white.any(axis=1))
    assert (rows[0], rows[-1]) == (120, 359)
    assert preprocess_image(img.convert("L"), cfg)[0].shape == (3, 480, 480)  # non-RGB accepted


def test_preprocess_batch() -> None:
    cfg = PreprocessConfig(size=16)
    imgs = [Image.new("RGB", (16, 8), (255, 0, 0)), Image.new("RGB", (5, 20), (0, 255, 0))]
    batch, lbs = preprocess_batch(imgs, cfg)
    assert batch.shape == (2, 3, 16, 16) and batch.dtype == np.float32
    for img, arr, lb in zip(imgs, batch, lbs):
        single, lb1 = preprocess_image(img, cfg)
        np.testing.assert_array_equal(arr, single)
        assert lb == lb1
    assert preprocess_batch([], cfg)[0].shape == (0, 3, 16, 16)


def test_letterbox_mask_worked_example() -> None:
    # 2x1 image (w=2, h=1) on a 4x4 canvas: scale 2, new 4x2, pad_y 1.
    mask = np.array([[True, False]])
    lb = letterbox_geometry(2, 1, 4)
    out = letterbox_mask(mask, lb)
    expected = np.zeros((4, 4), dtype=np.float32)
    expected[1:3, 0:2] = 1.0
    np.testing.assert_array_equal(out, expected)
    # at out_size 2 each output pixel averages a 2x2 block: rows 0-1 hold half the true pixels of
    # the left block (row 1 only), rows 2-3 likewise.
    np.testing.assert_allclose(letterbox_mask(mask, lb, out_size=2), [[0.5, 0.0], [0.5, 0.0]])


def test_letterbox_mask_soft_target_area() -> None:
    rng = np.random.default_rng(1)
    mask = rng.random((300, 400)) < 0.3
    lb = letterbox_geometry(400, 300, 480)
    soft = letterbox_mask(mask, lb, out_size=120)
    assert soft.shape == (120, 120) and soft.dtype == np.float32
    assert soft.min() >= 0.0 and soft.max() <= 1.0
    # area is preserved: fraction of the canvas covered = mask fraction * valid fraction
    valid_fraction = lb.new_w * lb.new_h / 480**2
    assert soft.mean() == pytest.approx(mask.mean() * valid_fraction, rel=5e-3)
    # non-divisible output size also works
    assert letterbox_mask(mask, lb, out_size=7).shape == (7, 7)


def test_unletterbox_constant_map_and_no_padding_bleed() -> None:
    lb = letterbox_geometry(100, 37, 480)
    canvas = np.zeros((120, 120), dtype=np.float32)
    # valid region at 1/4 scale: rows pad_y/4 .. (pad_y + new_h)/4
    y0, y1 = lb.pad_y / 4, (lb.pad_y + lb.new_h) / 4
    canvas[int(np.floor(y0)) : int(np.ceil(y1))] = 1.0
    out = unletterbox(canvas, lb)
    assert out.shape == (37, 100) and out.dtype == np.float32
    np.testing.assert_array_equal(out, 1.0)


def test_unletterbox_linear_ramp_is_exact() -> None:
    # Bilinear interpolation reproduces a linear function exactly away from clamped edges: a ramp
    # f(u) = u + 0.5 over canvas pixel u (i.e. the canvas coordinate of its centre) must come back as
    # the canvas coordinate of each original pixel centre: pad_x + (x + 0.5) * new_w / orig_w.
    lb = letterbox_geometry(7, 20, 40)  # new 14x40, pad_x 13
    ramp = np.tile(np.arange(40, dtype=np.float32) + 0.5, (40, 1))
    out = unletterbox(ramp, lb)
    x = np.arange(7)
    expected = lb.pad_x + (x + 0.5) * lb.new_w / lb.orig_w
    np.testing.assert_allclose(out[0], expected, atol=1e-5)
    np.testing.assert_allclose(out, np.broadcast_to(expected, (20, 7)), atol=1e-5)


def _uniform_neighbourhood(mask: np.ndarray, ry: int, rx: int) -> np.ndarray:
    """True where every pixel within (ry, rx) (Chebyshev box, clipped at the border) equals this one.

    Counts True pixels in each window with a summed-area table: uniform means 0 or all of them.
    """
    h, w = mask.shape
    sat = np.zeros((h + 1, w + 1), dtype=np.int64)
    sat[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    y0 = np.clip(np.arange(h) - ry, 0, h)[:, None]
    y1 = np.clip(np.arange(h) + ry + 1, 0, h)[:, None]
    x0 = np.clip(np.arange(w) - rx, 0, w)[None, :]
    x1 = np.clip(np.arange(w) + rx + 1, 0, w)[None, :]
    count = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    area = (y1 - y0) * (x1 - x0)
    return (count == 0) | (count == area)


@settings(max_examples=150, deadline=None)
@given(
    w=st.integers(1, 24),
    h=st.integers(1, 24),
    k=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip_exact_for_integer_scale(w: int, h: int, k: int, seed: int) -> None:
    # size = k * long side: both axes scale by the integer k, so every original pixel becomes a k x k
    # block and bilinear sampling at its centre only touches that block.
    size = k * max(w, h)
    lb = letterbox_geometry(w, h, size)
    assert (lb.new_w, lb.new_h) == (k * w, k * h)
    mask = np.random.default_rng(seed).random((h, w)) < 0.5
    back = unletterbox(letterbox_mask(mask, lb), lb) > 0.5
    np.testing.assert_array_equal(back, mask)


@pytest.mark.parametrize(
    ("w", "h", "size"),
    [(1, 1, 480), (1, 1, 1), (3, 1000, 1000), (1000, 3, 1000), (480, 7, 480), (7, 480, 480)],
)
def test_round_trip_exact_odd_shapes(w: int, h: int, size: int) -> None:
    lb = letterbox_geometry(w, h, size)
    mask = np.random.default_rng(w * 7 + h).random((h, w)) < 0.5
    back = unletterbox(letterbox_mask(mask, lb), lb) > 0.5
    np.testing.assert_array_equal(back, mask)


@settings(max_examples=150, deadline=None)
@given(
    w=st.integers(1, 60),
    h=st.integers(1, 60),
    size=st.integers(1, 64),
    seed=st.integers(0, 2**31 - 1),
    stripes=st.sampled_from(["rows", "cols"]),
)
def test_round_trip_exact_for_stripes_when_enlarging(w: int, h: int, size: int, seed: int, stripes: str) -> None:
    # Along one axis the round trip is exact for any enlarging scale (nearest block + bilinear tap at
    # its centre: the nearer tap is always inside the block with weight > 0.5). A mask constant along
    # the other axis reduces the 2-D case to that.
    if max(w, h) > size:
        size = max(w, h)
    lb = letterbox_geometry(w, h, size)
    rng = np.random.default_rng(seed)
    if stripes == "rows":
        mask = np.broadcast_to(rng.random((h, 1)) < 0.5, (h, w))
    else:
        mask = np.broadcast_to(rng.random((1, w)) < 0.5, (h, w))
    back = unletterbox(letterbox_mask(mask, lb), lb) > 0.5
    np.testing.assert_array_equal(back, mask)


@settings(max_examples=150, deadline=None)
@given(
    w=st.integers(1, 1000),
    h=st.integers(1, 1000),
    size=st.integers(1, 96),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip_errors_only_near_boundaries(w: int, h: int, size: int, seed: int) -> None:
    # Any geometry (shrinking included): a pixel whose neighbourhood of ~(orig/new + 1) pixels is
    # uniform comes back unchanged, so a geometric offset bug (shift, flip, wrong padding) fails.
    rng = np.random.default_rng(seed)
    lb = letterbox_geometry(w, h, size)
    # blobby masks: a coarse random grid upsampled, so uniform regions exist at every scale
    coarse = rng.random((4, 4)) < 0.5
    mask = coarse[np.arange(h) * 4 // h][:, np.arange(w) * 4 // w]
    back = unletterbox(letterbox_mask(mask, lb), lb) > 0.5
    ry = -(-lb.orig_h // lb.new_h) + 1
    rx = -(-lb.orig_w // lb.new_w) + 1
    safe = _uniform_neighbourhood(mask, ry, rx)
    np.testing.assert_array_equal(back[safe], mask[safe])


def test_round_trip_iou_on_real_scale() -> None:
    # 640x427 image, an ellipse mask; letterboxed to 120x120 (the model's map) and back.
    h, w = 427, 640
    yy, xx = np.mgrid[0:h, 0:w]
    mask = ((xx - 300) / 150.0) ** 2 + ((yy - 200) / 90.0) ** 2 <= 1.0
    lb = letterbox_geometry(w, h, 480)
    soft = letterbox_mask(mask, lb, out_size=120)
    back = unletterbox(soft, lb) > 0.5
    iou = (back & mask).sum() / (back | mask).sum()
    assert iou > 0.97


def test_bad_arguments() -> None:
    lb = letterbox_geometry(4, 3, 8)
    with pytest.raises(ValueError):
        letterbox_mask(np.zeros((4, 3), bool), lb)  # transposed shape
    with pytest.raises(ValueError):
        unletterbox(np.zeros((8, 4), np.float32), lb)
    with pytest.raises(ValueError):
        letterbox_geometry(0, 3, 8)
