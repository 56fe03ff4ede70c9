"""The Python API: Grounder.load / predict / predict_batch and Result's writers."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from lvg.core.tokenizer import TextTruncatedWarning
from lvg.errors import ArtifactError, InputError
from lvg.runtime.draw import PALETTE, Mark, overlay
from lvg.runtime.grounder import Grounder, default_model_path
from lvg.runtime.result import mask_to_rle
from tests.helpers.artifacts import make_checkpoint, make_image
from tests.helpers.regions import reference_main_box

TEXT = "the man on the left"



@pytest.fixture(scope="module")
def grounder(artifacts):
    return Grounder.load(artifacts.onnx[("lvg-tiny", False)], device="cpu")


def test_predict_shapes_and_consistency(grounder, artifacts):
    r = grounder.predict(artifacts.image, TEXT)
    assert r.task == "ris" and r.mask.shape == (120, 200) and r.mask.dtype == bool
    assert r.prob.shape == (120, 200) and r.prob.dtype == np.float32
    assert 0 < r.mask.sum() < r.mask.size  # the fixture model gives a partial mask
    # Independent derivations from the returned probability map.
    np.testing.assert_array_equal(r.mask, r.prob > 0.35)
    assert r.box == reference_main_box(r.mask, r.prob)  # the box of the 8-connected region holding the peak
    first = r.to_dict(include_mask=False)["instances"][0]
    assert first["box"] == list(r.box) and first["peak"] == round(float(r.prob[r.instances[0].mask].max()), 6)
    assert r.score == pytest.approx(float(r.prob[r.mask].mean()), rel=1e-6)
    assert r.no_target is False and r.no_target_prob is None
    assert set(r.timings) >= {"preprocess", "inference", "postprocess", "total"}
    assert all(v >= 0 for v in r.timings.values())


def test_image_sources_agree(grounder, artifacts):
    path_r = grounder.predict(artifacts.image, TEXT)
    arr = np.asarray(Image.open(artifacts.image).convert("RGB"))
    for src in (Image.open(artifacts.image), arr):
        r = grounder.predict(src, TEXT)
        np.testing.assert_array_equal(r.mask, path_r.mask)
        np.testing.assert_allclose(r.prob, path_r.prob, atol=1e-6)


def test_onnx_and_torch_checkpoint_give_the_same_result(grounder, artifacts):
    a = grounder.predict(artifacts.image, TEXT)
    b = Grounder.load(artifacts.ckpt["lvg-tiny"], device="cpu").predict(artifacts.image, TEXT)
    np.testing.assert_allclose(a.prob, b.prob, atol=1e-4)
    assert (a.mask == b.mask).mean() > 0.999


def test_fp16_model_agrees(grounder, artifacts):
    a = grounder.predict(artifacts.image, TEXT)
    b = Grounder.load(artifacts.onnx[("lvg-tiny", True)], device="cpu").predict(artifacts.image, TEXT)
    assert np.abs(a.prob - b.prob).max() < 2e-2
    assert (a.mask == b.mask).mean() >= 0.995


def test_predict_batch_equals_single_predictions(grounder, artifacts, tmp_path):
    other = make_image(tmp_path / "tall.png", w=90, h=150, seed=3)
    images, texts = [artifacts.image, other, artifacts.image], [TEXT, "dog on the grass", "blue car"]
    batch = grounder.predict_batch(images, texts)
    assert [r.text for r in batch] == texts and batch[2].timings["batch"] == 3
    for img, text, r in zip(images, texts, batch):
        single = grounder.predict(img, text)
        np.testing.assert_allclose(r.prob, single.prob, atol=1e-5)
        assert r.box == single.box
    assert batch[1].mask.shape == (150, 90)
    assert grounder.predict_batch([], []) == []
    with pytest.raises(InputError, match="2 images but 1 texts"):
        grounder.predict_batch(images[:2], texts[:1])


def test_thread_safety(grounder, artifacts):
    texts = [TEXT, "dog on the grass", "blue car", "small child"] * 2
    serial = [grounder.predict(artifacts.image, t).prob for t in texts]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda t: grounder.predict(artifacts.image, t).prob, texts))
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)


def test_gres_tasks(artifacts, tmp_path):
    g = Grounder.load(artifacts.onnx[("lvg-tiny-gres", False)], device="cpu")
    assert g.default_task == "gres"
    r = g.predict(artifacts.image, TEXT)
    # Fixture bias -2: p(no target) ~ sigmoid(-2 + small) < 0.5.
    assert r.task == "gres" and not r.no_target and 0 < r.no_target_prob < 0.5 and r.mask.any()
    # A checkpoint whose no-target bias is +5 says "no target": empty mask, no box, score 0.
    ckpt = make_checkpoint("lvg-tiny-gres", tmp_path / "nt.safetensors", artifacts.spm, no_target_bias=5.0)
    g_nt = Grounder.load(ckpt, device="cpu")
    r = g_nt.predict(artifacts.image, TEXT)
    assert r.no_target and r.no_target_prob > 0.5 and not r.mask.any() and r.box is None and r.score == 0.0
    # ris / rec ignore the no-target head but still report its probability.
    r = g_nt.predict(artifacts.image, TEXT, task="rec")
    assert r.task == "rec" and not r.no_target and r.no_target_prob > 0.5 and r.box is not None


def test_task_errors(grounder, artifacts):
    with pytest.raises(InputError, match="no-target head"):
        grounder.predict(artifacts.image, TEXT, task="gres")
    with pytest.raises(InputError, match="unknown task"):
        grounder.predict(artifacts.image, TEXT, task="detect")
    with pytest.raises(InputError, match="empty"):
        grounder.predict(artifacts.image, "   ")
    with pytest.raises(InputError):
        grounder.predict(artifacts.image.with_name("missing.png"), TEXT)
    with pytest.raises(InputError, match="torch backend"):
        grounder.predict(artifacts.image, TEXT, return_attention=True)


def test_long_text_warns(grounder, artifacts):
    with pytest.warns(TextTruncatedWarning):
        r = grounder.predict(artifacts.image, " ".join(["the man on the left"] * 20))
    assert r.mask.shape == (120, 200)


def test_result_json_and_rle(grounder, artifacts):
    r = grounder.predict(artifacts.image, TEXT)
    data = json.loads(r.to_json())
    assert data["box"] == list(r.box) and data["image_size"] == [200, 120]
    assert data["mask_area"] == int(r.mask.sum()) and data["model"]["backend"] == "onnxruntime"
    # Decode the RLE independently: alternating runs of 0 / 1 in column-major order.
    counts = data["mask_rle"]["counts"]
    flat = np.concatenate([np.full(n, i % 2, dtype=bool) for i, n in enumerate(counts)])
    np.testing.assert_array_equal(flat.reshape((120, 200), order="F"), r.mask)
    assert mask_to_rle(np.ones((2, 2), bool))["counts"] == [0, 4]


def test_save_mask_and_overlay(grounder, artifacts, tmp_path):
    r = grounder.predict(artifacts.image, TEXT)
    mask_png = r.save_mask(tmp_path / "sub" / "mask.png")
    loaded = np.asarray(Image.open(mask_png))
    assert loaded.dtype == np.uint8 and set(np.unique(loaded)) <= {0, 255}
    np.testing.assert_array_equal(loaded == 255, r.mask)
    ov = np.asarray(Image.open(r.save_overlay(tmp_path / "ov.png", label=False)).convert("RGB")).astype(int)
    img = np.asarray(Image.open(artifacts.image).convert("RGB")).astype(int)
    line = 2  # outline and box width at this image size
    x1, y1, x2, y2 = r.box
    near_box = np.zeros_like(r.mask)
    near_box[max(y1 - line, 0) : y2 + line, max(x1 - line, 0) : x2 + line] = True
    near_box[y1 + line : y2 - line, x1 + line : x2 - line] = False
    outside = ~r.mask & ~near_box
    np.testing.assert_array_equal(ov[outside], img[outside])
    # The colour: of the palette, the one farthest from the image's mean colour under the mask.
    mean = img[r.mask].mean(axis=0)
    color = max(PALETTE, key=lambda c: np.linalg.norm(np.array(c) - mean))
    interior = r.mask.copy()
    for _ in range(line):  # pixels at least `line` pixels inside the mask: tinted, not outlined
        interior[1:-1, 1:-1] = interior[1:-1, 1:-1] & interior[:-2, 1:-1] & interior[2:, 1:-1] & interior[1:-1, :-2] \
            & interior[1:-1, 2:]
        interior[[0, -1], :] = False
        interior[:, [0, -1]] = False
    tinted = interior & ~near_box
    assert tinted.any()
    np.testing.assert_array_equal(ov[tinted], np.rint(img[tinted] * 0.6 + np.array(color) * 0.4))
    edge = r.mask & ~interior & ~near_box
    assert edge.any() and (ov[edge] == color).all()  # a solid outline
    assert tuple(ov[y1, (x1 + x2) // 2]) == color  # the box, in the same colour
    # REC draws the box alone: the mask's interior is the untouched image.
    rec = grounder.predict(artifacts.image, TEXT, task="rec")
    ov_rec = rec.overlay(label=False).astype(int)
    np.testing.assert_array_equal(ov_rec[tinted], img[tinted])
    assert tuple(ov_rec[y1, (x1 + x2) // 2]) == color


def test_overlay_colour_contrasts_with_the_object():
    """A red object gets a colour far from red; two instances get two colours."""
    img = np.zeros((60, 80, 3), np.uint8)
    img[..., 1] = 90
    img[10:30, 10:30] = (220, 30, 30)
    mask = np.zeros((60, 80), bool)
    mask[12:28, 12:28] = True
    out = overlay(img, [Mark(mask, (12, 12, 28, 28), "x")]).astype(int)
    color = out[12, 20]  # on the outline
    assert np.linalg.norm(color - np.array([220, 30, 30])) > 250
    other = np.zeros_like(mask)
    other[40:50, 50:70] = True
    out = overlay(img, [Mark(mask, None), Mark(other, None)]).astype(int)
    assert tuple(out[12, 20]) != tuple(out[40, 60])


def test_attention_from_torch_checkpoint(artifacts, tmp_path):
    g = Grounder.load(artifacts.ckpt["lvg-tiny"], device="cpu")
    r = g.predict(artifacts.image, TEXT, return_attention=True)
    assert r.attention.shape == (3, 120, 200)
    out = r.save_attention(tmp_path / "att.png")
    assert Image.open(out).size == (3 * 200, 120)


def test_load_errors(artifacts, tmp_path):
    bare = make_checkpoint("lvg-tiny", tmp_path / "bare.safetensors", artifacts.spm, with_tokenizer=False)
    with pytest.raises(ArtifactError, match="carries no tokenizer"):
        Grounder.load(bare)
    g = Grounder.load(bare, tokenizer=artifacts.spm, device="cpu")
    assert g.tokenizer.model_bytes == artifacts.spm.read_bytes()
    # A tokenizer that is not the artifact's is refused.
    from lvg.core.tokenizer import train_sentencepiece

    other = train_sentencepiece(["completely different words here"] * 3, tmp_path / "other.spm", vocab_size=40)
    with pytest.raises(ArtifactError, match="does not match"):
        Grounder.load(artifacts.onnx[("lvg-tiny", False)], tokenizer=other)


def test_missing_bundled_model_names_the_flag(monkeypatch, tmp_path):
    import lvg.runtime.grounder as grounder_module

    monkeypatch.setattr(grounder_module, "_BUNDLED", tmp_path / "absent.onnx")
    with pytest.raises(ArtifactError, match="no bundled model; pass --model"):
        default_model_path()


def test_predict_batch_yields_errors_in_place_and_runs_the_rest_once(grounder, artifacts, tmp_path):
    """``on_error="yield"``: a bad image or text answers as its error, the good pairs share one model call."""
    other = make_image(tmp_path / "tall.png", w=90, h=150, seed=3)
    images = [artifacts.image, np.zeros((2, 2), np.float32), other, artifacts.image]
    texts = [TEXT, TEXT, "dog on the grass", 7]
    out = grounder.predict_batch(images, texts, on_error="yield")
    assert isinstance(out[1], InputError) and "uint8" in str(out[1])
    assert isinstance(out[3], InputError) and "string" in str(out[3])
    for i in (0, 2):
        single = grounder.predict(images[i], texts[i])
        np.testing.assert_allclose(out[i].prob, single.prob, atol=1e-5)
        assert out[i].text == texts[i] and out[i].timings["batch"] == 2
    assert all(isinstance(r, InputError) for r in grounder.predict_batch([images[1]], [TEXT], on_error="yield"))
    with pytest.raises(InputError, match="uint8"):
        grounder.predict_batch(images, texts)
    with pytest.raises(InputError, match="on_error"):
        grounder.predict_batch(images, texts, on_error="skip")
