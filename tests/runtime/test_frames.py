"""Frames and streams: BGR arrays, ``Grounder.stream``, unknown words, confidence flags and the short repr."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from lvg.core.domain import vocabulary
from lvg.errors import InputError
from lvg.export.annotate import annotate
from lvg.runtime.grounder import Grounder
from lvg.runtime.result import LOW_CONFIDENCE, Result
from tests.helpers.artifacts import CORPUS, make_image

TEXT = "the man on the left"


@pytest.fixture(scope="module")
def frames(micro, tmp_path_factory):
    d = tmp_path_factory.mktemp("frames")
    return [make_image(d / f"f{i}.png", w=80 + 7 * i, h=60 + 3 * i, seed=i) for i in range(6)]


@pytest.fixture(scope="module")
def known(micro, tmp_path_factory):
    """The micro model, with the test corpus recorded as its training words."""
    path = tmp_path_factory.mktemp("known") / "micro.onnx"
    shutil.copy(micro.onnx, path)
    annotate(path, words=vocabulary(CORPUS), description="test scenes")
    return Grounder.load(path, device="cpu")


def _same(a: Result, b: Result) -> None:
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.prob, b.prob)
    assert a.box == b.box and a.score == b.score and a.no_target_prob == b.no_target_prob


def test_bgr_frame_with_channel_order_equals_the_rgb_answer(micro):
    g = Grounder.load(micro.onnx, device="cpu")
    rgb = np.asarray(Image.open(micro.image).convert("RGB"))
    bgr = np.ascontiguousarray(rgb[..., ::-1])  # what cv2.imread / VideoCapture give
    want = g.predict(rgb, TEXT)
    got = g.predict(bgr, TEXT, channel_order="bgr")
    _same(got, want)
    np.testing.assert_array_equal(got.image, rgb)  # the result holds the RGB image
    assert not np.array_equal(g.predict(bgr, TEXT).prob, want.prob)  # read as RGB, BGR is another image
    (batch,) = g.predict_batch(bgr[None], [TEXT], channel_order="BGR")
    _same(batch, want)
    with pytest.raises(InputError, match="numpy arrays"):
        g.predict(micro.image, TEXT, channel_order="bgr")
    with pytest.raises(InputError, match="channel_order"):
        g.predict(rgb, TEXT, channel_order="hsv")


def test_stream_equals_predict_in_order(micro, frames):
    g = Grounder.load(micro.onnx, device="cpu")
    want = [g.predict(f, TEXT) for f in frames]
    for batch_size in (1, 4):
        got = list(g.stream(iter(frames), TEXT, batch_size=batch_size))
        assert len(got) == len(frames)
        for a, b in zip(got, want):
            _same(a, b)
            assert set(a.timings) >= {"preprocess", "inference", "postprocess", "total"}
    arrays = np.stack([np.asarray(Image.open(frames[0]).convert("RGB"))] * 3)  # (3, H, W, 3): three frames
    assert len(list(g.stream(arrays[..., ::-1], TEXT, channel_order="bgr"))) == 3


def test_stream_bad_frames_raise_or_are_yielded(micro, frames, tmp_path):
    g = Grounder.load(micro.onnx, device="cpu")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    items = [frames[0], broken, frames[1]]
    out = list(g.stream(items, TEXT, on_error="yield"))
    assert isinstance(out[0], Result) and isinstance(out[2], Result)
    assert isinstance(out[1], InputError) and "broken.png" in str(out[1])
    for batch_size in (1, 3):  # the frame before a bad one is answered first, in its chunk too
        stream = g.stream(items, TEXT, batch_size=batch_size)
        assert isinstance(next(stream), Result)
        with pytest.raises(InputError, match="broken.png"):
            next(stream)
    with pytest.raises(InputError, match="on_error"):
        next(g.stream(items, TEXT, on_error="skip"))


def test_stream_passes_on_the_sources_error_and_stops_its_thread(micro, frames):
    g = Grounder.load(micro.onnx, device="cpu")

    def camera():
        yield frames[0]
        raise OSError("camera unplugged")

    stream = g.stream(camera(), TEXT)
    assert isinstance(next(stream), Result)
    with pytest.raises(OSError, match="unplugged"):
        next(stream)

    def endless():
        while True:
            yield frames[0]

    before = threading.active_count()
    for i, _ in enumerate(g.stream(endless(), TEXT)):
        if i == 2:
            break  # closing the generator stops the read-ahead thread
    assert threading.active_count() == before


def test_unknown_words_description_and_repr(known, micro):
    r = known.predict(micro.image, "Zebra cat zebra")
    assert r.unknown_words == ["zebra"]  # each once, case-folded
    assert known.unknown_words("The man on the LEFT") == [] and known.description == "test scenes"
    data = r.to_dict(include_mask=False)
    assert data["unknown_words"] == r.unknown_words and "mask_rle" not in data
    plain = Grounder.load(micro.onnx, device="cpu")  # records no vocabulary: nothing is claimed
    assert plain.predict(micro.image, "rocket").unknown_words is None and plain.description is None
    text = repr(r)
    assert len(text) < 400 and "zebra" in text and "score=" in text and "[[" not in text


def test_low_confidence_follows_the_score(micro, frames):
    g = Grounder.load(micro.onnx, device="cpu")
    for f in frames:
        for t in (0.0, 0.35, 0.6):
            r = g.predict(f, TEXT, mask_threshold=t)
            assert r.low_confidence == (r.box is None or r.score < LOW_CONFIDENCE)
            assert r.to_dict(include_mask=False)["low_confidence"] == r.low_confidence
