"""Property tests (hypothesis) of the geometry, post-processing and tokenisation every request goes through.

- ``letterbox_mask`` then ``unletterbox_mask`` gives the mask back exactly whenever the letterbox does
  not shrink the image (any size up to the canvas, any aspect ratio); when it shrinks, exactly on the
  rows / columns the letterbox kept (the others are gone: no inverse can exist) - see
  :func:`lvg.core.preprocess.unletterbox_mask`.
- post-processing any probability map gives a mask of the original image size, and the box always
  contains the mask (tightly);
- tokenisation never raises for text with any visible character and always yields the fixed length.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lvg.core.postprocess import postprocess
from lvg.core.preprocess import _nearest_index, letterbox_geometry, letterbox_mask, unletterbox_mask
from lvg.core.tokenizer import BOS_ID, EOS_ID, PAD_ID, TextTruncatedWarning, Tokenizer, normalize_text
from lvg.errors import InputError
from tests.helpers.regions import reference_main_box

masks_seed = st.integers(0, 2**32 - 1)


def _random_mask(h: int, w: int, seed: int, density: float) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w)) < density


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 200),
    w=st.integers(1, 200),
    h=st.integers(1, 200),
    seed=masks_seed,
    density=st.floats(0.0, 1.0),
)
def test_unletterbox_mask_inverts_letterbox_exactly_when_not_shrinking(size, w, h, seed, density) -> None:
    assume(max(w, h) <= size)
    lb = letterbox_geometry(w, h, size)
    mask = _random_mask(h, w, seed, density)  # salt and pepper: every single pixel must come back
    canvas = letterbox_mask(mask, lb)
    back = unletterbox_mask(canvas, lb)
    assert back.shape == (h, w) and back.dtype == bool
    np.testing.assert_array_equal(back, mask)


@pytest.mark.parametrize(("w", "h"), [(1, 1), (479, 1), (1, 480), (480, 480), (479, 13), (17, 400), (240, 239)])
def test_unletterbox_mask_exact_at_the_model_canvas(w: int, h: int) -> None:
    # The production canvas (480) from smaller images, including 1-pixel-wide and odd scale factors.
    lb = letterbox_geometry(w, h, 480)
    mask = _random_mask(h, w, seed=w * 1000 + h, density=0.5)
    np.testing.assert_array_equal(unletterbox_mask(letterbox_mask(mask, lb), lb), mask)


@settings(max_examples=150, deadline=None)
@given(size=st.integers(1, 64), w=st.integers(1, 400), h=st.integers(1, 400), seed=masks_seed)
def test_unletterbox_mask_when_shrinking_is_exact_on_kept_pixels(size, w, h, seed) -> None:
    assume(max(w, h) > size)
    lb = letterbox_geometry(w, h, size)
    mask = _random_mask(h, w, seed, 0.5)
    back = unletterbox_mask(letterbox_mask(mask, lb), lb)
    # The letterbox's nearest sampling keeps these original rows / columns (independently recomputed
    # from the pixel-centre rule: canvas pixel u reads floor((u + 0.5) * orig / new)).
    kept_rows = np.unique(np.floor((np.arange(lb.new_h) + 0.5) * h / lb.new_h).astype(int))
    kept_cols = np.unique(np.floor((np.arange(lb.new_w) + 0.5) * w / lb.new_w).astype(int))
    np.testing.assert_array_equal(back[np.ix_(kept_rows, kept_cols)], mask[np.ix_(kept_rows, kept_cols)])
    # Every other pixel takes the value of a kept pixel at most ceil(orig / new) away on each axis.
    ry, rx = -(-h // lb.new_h), -(-w // lb.new_w)
    ys, xs = np.nonzero(back != mask)
    for y, x in zip(ys[:50], xs[:50]):
        window = mask[max(y - ry, 0) : y + ry + 1, max(x - rx, 0) : x + rx + 1]
        assert (window == back[y, x]).any()


@settings(max_examples=100, deadline=None)
@given(k=st.integers(1, 8), m=st.integers(1, 30), w=st.integers(1, 300), h=st.integers(1, 300), seed=masks_seed)
def test_unletterbox_mask_from_a_coarse_map_equals_block_upsampling(k, m, w, h, seed) -> None:
    # A map of m x m over a canvas of k * m: reading it directly must equal reading its k x k block
    # upsampling at full canvas resolution (both pick the map pixel containing each centre).
    lb = letterbox_geometry(w, h, k * m)
    coarse = np.random.default_rng(seed).random((m, m)) < 0.5
    full = np.kron(coarse, np.ones((k, k), dtype=bool))  # (m, m) -> (k m, k m)
    np.testing.assert_array_equal(unletterbox_mask(coarse, lb), unletterbox_mask(full, lb))


def test_unletterbox_mask_never_reads_padding() -> None:
    # Padding rows / columns set to True must not leak into the image's border pixels.
    lb = letterbox_geometry(300, 100, 480)
    canvas = np.ones((480, 480), dtype=bool)
    canvas[lb.pad_y : lb.pad_y + lb.new_h, lb.pad_x : lb.pad_x + lb.new_w] = False
    assert not unletterbox_mask(canvas, lb).any()
    coarse = np.ones((120, 120), dtype=bool)
    coarse[lb.pad_y // 4 + 1 : (lb.pad_y + lb.new_h) // 4 - 1] = False
    back = unletterbox_mask(coarse, lb)
    assert not back[5:-5].any()


def test_unletterbox_mask_arguments() -> None:
    lb = letterbox_geometry(4, 3, 8)
    with pytest.raises(ValueError):
        unletterbox_mask(np.zeros((8, 4), bool), lb)
    with pytest.raises(ValueError):
        unletterbox_mask(np.zeros(8, bool), lb)
    soft = np.full((8, 8), 0.7, dtype=np.float32)
    assert unletterbox_mask(soft, lb).all() and not unletterbox_mask(soft * 0.5, lb).any()


def test_nearest_index_is_onto_when_enlarging() -> None:
    # The fact the exactness rests on, checked exhaustively on small sizes.
    for n_in in range(1, 60):
        for n_out in range(n_in, 130):
            assert np.array_equal(np.unique(_nearest_index(n_out, n_in)), np.arange(n_in))


# ------------------------------------------------------------------------------------- post-processing

prob_values = st.floats(0.0, 1.0, allow_nan=False, width=32)


def _twin_blobs() -> np.ndarray:
    """Two equal pixels whose upsampled blobs differ only by float noise: a tie the box must not flip on."""
    prob = np.zeros((15, 15), np.float32)
    prob[6, 3] = prob[13, 3] = 0.375
    return prob


@settings(max_examples=200, deadline=None)
@given(
    prob=st.integers(1, 40).flatmap(lambda n: arrays(np.float32, (n, n), elements=prob_values)),
    w=st.integers(1, 500),
    h=st.integers(1, 500),
    size_factor=st.integers(1, 12),
    threshold=st.floats(0.0, 0.99),
    logit=st.none() | st.floats(-50, 50),
)
@example(prob=_twin_blobs(), w=15, h=31, size_factor=2, threshold=0.0, logit=None)
def test_postprocess_any_prob_map(prob, w, h, size_factor, threshold, logit) -> None:
    size = prob.shape[0] * size_factor  # the map covers the canvas at any integer scale
    lb = letterbox_geometry(w, h, size)
    pred = postprocess(prob, lb, mask_threshold=threshold, no_target_logit=logit)
    assert pred.mask.shape == (h, w) and pred.mask.dtype == bool
    assert pred.prob.shape == (h, w) and pred.prob.dtype == np.float32
    lo, hi = prob.min(), prob.max()
    assert (pred.prob >= lo - 1e-6).all() and (pred.prob <= hi + 1e-6).all()  # bilinear: a convex mix
    if pred.no_target:
        assert not pred.mask.any() and pred.box is None and pred.score == 0.0
        return
    np.testing.assert_array_equal(pred.mask, pred.prob > np.float32(threshold))
    if not pred.mask.any():
        assert pred.box is None and pred.score == 0.0
        return
    x1, y1, x2, y2 = pred.box
    main = pred.regions[0]
    assert (main.mask & pred.mask).sum() == main.area
    assert all(round(r.peak, 6) <= round(main.peak, 6) for r in pred.regions)
    assert main.peak == pytest.approx(float(pred.prob[main.mask].max()))
    if h * w <= 20_000:  # the tight box of the 8-connected region holding the peak, by a plain (slow) flood fill
        assert (x1, y1, x2, y2) == reference_main_box(pred.mask, pred.prob)
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    assert sum(r.area for r in pred.regions) <= pred.mask.sum() and pred.regions[0].box == pred.box
    assert threshold < pred.score <= 1.0 + 1e-6


# ---------------------------------------------------------------------------------------- tokenisation

# Scripts a service meets: Latin, emoji (incl. modifiers / ZWJ sequences), RTL (Arabic, Hebrew), CJK,
# combining marks, and the invisible characters normalisation must drop.
_alphabet = st.sampled_from(
    list("the man on left dog 0123")
    + ["😀", "👍🏽", "👨\u200d👩\u200d👧", "🐶"]
    + list("الرجل على اليسار") + list("האיש משמאל") + list("左边的男人")
    + ["e\u0301", "\u200b", "\u200d", "\ufeff", "\u202e", "\x00", "\x07", "\t", "\n", "\u3000", "\ud800"]
)
texts = st.lists(_alphabet, max_size=120).map("".join)


@pytest.fixture(scope="module")
def tok(tokenizer: Tokenizer) -> Tokenizer:
    return tokenizer


@settings(max_examples=300, deadline=None)
@given(text=texts, max_len=st.integers(2, 40), repeat=st.sampled_from([1, 1, 1, 200]))
def test_tokenization_never_raises_and_has_fixed_length(tok: Tokenizer, text: str, max_len: int, repeat: int) -> None:
    text = text * repeat  # up to ~24,000 characters: exercises the long-text cut
    if not normalize_text(text):
        with pytest.raises(InputError, match="text is empty"):
            tok.encode(text, max_len)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids, mask = tok.encode(text, max_len)
    assert ids.shape == (max_len,) and ids.dtype == np.int64
    assert mask.shape == (max_len,) and mask.dtype == bool
    # Expected sequence from the full word-piece list (no cut): bos, the first max_len - 2, eos, pads.
    pieces = tok.word_ids(text)
    body = pieces[: max_len - 2]
    expected = np.full(max_len, PAD_ID, dtype=np.int64)
    expected[0], expected[1 : len(body) + 1], expected[len(body) + 1] = BOS_ID, body, EOS_ID
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(mask, np.arange(max_len) < len(body) + 2)
    truncated = [w for w in caught if issubclass(w.category, TextTruncatedWarning)]
    assert len(truncated) == (1 if len(pieces) > max_len - 2 else 0)
