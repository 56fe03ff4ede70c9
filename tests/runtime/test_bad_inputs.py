"""The bad-input matrix through ``Grounder``: real files written here (tests/helpers/bad_inputs.py).

Every bad case must give a typed one-line :mod:`lvg.errors` exception; every valid case a valid result
whose values match a prediction on an independently decoded pixel array. The same matrix through
``lvg infer``: tests/cli/test_infer_bad_inputs.py.

Loader-level details (exact pixel values of each mode) are in test_image.py / test_tokenizer.py; this
file checks the whole path a request takes.
"""


from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lvg.core.tokenizer import TextTruncatedWarning
from lvg.errors import ArtifactError, InputError
from lvg.runtime.grounder import Grounder
from tests.helpers.bad_inputs import (
    BAD_IMAGES,
    BAD_MODELS,
    BAD_TEXTS,
    TEXT,
    VALID_IMAGES,
    Evil,
    bad_image,
    bad_model,
    valid_image,
)
from tests.helpers.micro_model import Micro


@pytest.fixture(scope="module")
def grounder(micro: Micro) -> Grounder:
    return Grounder.load(micro.onnx, device="cpu")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    return Path(tmp_path_factory.mktemp("bad-inputs"))


def _check_valid(r, h: int, w: int) -> None:
    assert r.mask.shape == (h, w) and r.mask.dtype == bool
    assert r.prob.shape == (h, w) and np.isfinite(r.prob).all() and (r.prob >= 0).all() and (r.prob <= 1).all()
    if r.box is None:
        assert not r.mask.any() and r.score == 0.0
    else:
        x1, y1, x2, y2 = r.box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        inside = np.zeros_like(r.mask)
        inside[y1:y2, x1:x2] = True
        assert not (r.mask & ~inside).any()
        assert 0.0 <= r.score <= 1.0


def _one_line_error(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_bad_image_api(grounder: Grounder, files: Path, kind: str) -> None:
    path = bad_image(kind, files)
    with pytest.raises(InputError, match=BAD_IMAGES[kind]) as info:
        grounder.predict(path, TEXT)
    assert str(path) in _one_line_error(info.value)


@pytest.mark.parametrize("kind", VALID_IMAGES)
def test_valid_image_api(grounder: Grounder, files: Path, kind: str) -> None:
    path, expected = valid_image(kind, files)
    r = grounder.predict(path, TEXT)
    h, w = expected.shape[:2]
    _check_valid(r, h, w)
    # The same prediction as on the independently decoded pixels: mask aligned with the displayed image.
    ref = grounder.predict(expected, TEXT)
    np.testing.assert_array_equal(r.image, expected)
    np.testing.assert_array_equal(r.prob, ref.prob)
    np.testing.assert_array_equal(r.mask, ref.mask)


def test_exif_rotation_moves_the_mask(grounder: Grounder, files: Path) -> None:
    # Alignment, not just shape: the displayed image is the stored one rotated clockwise, so the
    # prediction on the file must be the prediction on the stored pixels' rotation, which differs
    # from the unrotated one's mask rotated (the model is not rotation-equivariant) - check both ways.
    path, displayed = valid_image("exif-rotated", files)
    r = grounder.predict(path, TEXT)
    assert r.mask.shape == (64, 40)
    stored = np.ascontiguousarray(np.rot90(displayed, k=1))
    unrotated = grounder.predict(stored, TEXT)
    assert unrotated.mask.shape == (40, 64)
    assert not np.array_equal(r.prob, np.rot90(unrotated.prob, k=-1))  # the file was not read as stored


def test_broken_exif_uses_the_stored_pixels_with_a_warning(grounder: Grounder, files: Path) -> None:
    # The pixels are intact, only the orientation is unreadable: the image is used as stored, and says so.
    stored = (np.random.default_rng(3).random((40, 64, 3)) * 255).astype(np.uint8)
    path = files / "broken-exif.jpg"
    truncated_ifd = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00\x12\x01\x03\x00"  # 5 entries promised, 1 begun
    Image.fromarray(stored).save(path, exif=truncated_ifd, quality=95)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = grounder.predict(path, TEXT)
    assert any("EXIF" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reading the reference pixels warns about the EXIF block again
        reference = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(r.image, reference)


# ------------------------------------------------------------------------------------------------ text


@pytest.mark.parametrize("kind", list(BAD_TEXTS))
def test_bad_text_api(grounder: Grounder, micro: Micro, kind: str) -> None:
    with pytest.raises(InputError, match="text is empty") as info:
        grounder.predict(micro.image, BAD_TEXTS[kind])
    _one_line_error(info.value)


@pytest.mark.parametrize("text", [None, b"the man", 42])
def test_non_string_text(grounder: Grounder, micro: Micro, text) -> None:
    with pytest.raises(InputError, match="must be a string"):
        grounder.predict(micro.image, text)


def test_ten_thousand_characters_truncated_with_a_warning(grounder: Grounder, micro: Micro) -> None:
    room = grounder.config.preprocess.max_text_len - 2
    word = "the"
    assert len(grounder.tokenizer.word_ids(word)) == 1  # one piece per word, so room words fill it exactly
    text = f"{word} " * 2500
    assert len(text) == 10_000
    with pytest.warns(TextTruncatedWarning, match="truncated"):
        r = grounder.predict(micro.image, text)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TextTruncatedWarning)  # exactly `room` pieces: no warning
        ref = grounder.predict(micro.image, " ".join([word] * room))
    np.testing.assert_array_equal(r.prob, ref.prob)
    # The result keeps the text as given and says the model read only its start.
    assert r.text == text and r.text_truncated and r.to_dict()["text_truncated"] is True
    assert not ref.text_truncated and ref.to_dict()["text_truncated"] is False


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("the man\u200b on the\u200d left", "the man on the left"),  # zero-width characters vanish
        ("the man\x00 on\x07 the\x1b left", "the man on the left"),  # control characters vanish
        ("\u202ethe man on the left\u202c", "the man on the left"),  # bidi overrides are format chars
        ("the   man\ton\n\nthe left", "the man on the left"),  # whitespace runs collapse
    ],
)
def test_invisible_characters_are_ignored(grounder: Grounder, micro: Micro, text: str, clean: str) -> None:
    np.testing.assert_array_equal(grounder.predict(micro.image, text).prob, grounder.predict(micro.image, clean).prob)


@pytest.mark.parametrize("text", ["the dog 🐶 on the left 😀", "الرجل على اليسار", "האיש משמאל", "左边的男人",
                                  "👍🏽" * 30])
def test_emoji_and_right_to_left_give_valid_output(grounder: Grounder, micro: Micro, text: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TextTruncatedWarning)
        r = grounder.predict(micro.image, text)
    _check_valid(r, 120, 200)


def test_bad_threshold(grounder: Grounder, micro: Micro) -> None:
    for t in (float("nan"), -0.1, 1.0, "high"):
        with pytest.raises(InputError, match="threshold"):
            grounder.predict(micro.image, TEXT, mask_threshold=t)


@pytest.mark.parametrize("kind", list(BAD_MODELS))
def test_bad_model_api(micro: Micro, files: Path, kind: str) -> None:
    path = bad_model(kind, micro, files)
    etype, pattern = BAD_MODELS[kind]
    with pytest.raises(etype, match=pattern) as info:
        # Some mismatches only show when the graph runs: load, then predict.
        Grounder.load(path, device="cpu").predict(micro.image, TEXT)
    _one_line_error(info.value)
    assert not (files / "PWNED").exists()  # nothing was unpickled


@pytest.mark.parametrize("kind", ["onnx-missing-inputs", "onnx-wrong-text-length", "onnx-wrong-size",
                                  "onnx-wrong-head"])
def test_onnx_graph_contradicting_its_metadata_is_refused_at_load(micro: Micro, files: Path, kind: str) -> None:
    # A server must fail when it starts, not on its first request.
    with pytest.raises(ArtifactError, match=BAD_MODELS[kind][1]) as info:
        Grounder.load(bad_model(kind, micro, files), device="cpu")
    _one_line_error(info.value)


def test_pickle_never_executed_anywhere(micro: Micro, grounder: Grounder, tmp_path: Path) -> None:
    # The same code-running pickle offered as a model, an image and a tokenizer: all refused, none run.
    marker = tmp_path / "PWNED"
    blob = pickle.dumps(Evil(marker))
    pickle.loads(pickle.dumps(Evil(tmp_path / "proof")))  # the payload really works when unpickled
    assert (tmp_path / "proof").exists()
    for suffix in (".pth", ".pt", ".ckpt", ".bin", ".pkl", ".safetensors", ".onnx"):
        p = tmp_path / f"evil{suffix}"
        p.write_bytes(blob)
        with pytest.raises(ArtifactError):
            Grounder.load(p, device="cpu")
    (tmp_path / "evil.jpg").write_bytes(blob)
    with pytest.raises(InputError, match="not an image"):
        grounder.predict(tmp_path / "evil.jpg", TEXT)
    (tmp_path / "evil.spm").write_bytes(blob)
    with pytest.raises(ArtifactError, match="not a sentencepiece model"):
        Grounder.load(micro.onnx, tokenizer=tmp_path / "evil.spm")
    assert not marker.exists()


def test_expected_variant(micro: Micro) -> None:
    assert Grounder.load(micro.onnx, variant="lvg-tiny").config.name == "lvg-tiny"
    with pytest.raises(ArtifactError, match="holds variant 'lvg-tiny', not the expected 'lvg-tiny-gres'"):
        Grounder.load(micro.onnx, variant="lvg-tiny-gres")
    with pytest.raises(InputError, match="unknown variant"):
        Grounder.load(micro.onnx, variant="lvg-xxl")
