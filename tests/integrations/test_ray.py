"""Ray Data batch inference on a local Ray instance equals the plain Grounder, row for row."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lvg.integrations.ray import GrounderPredictor, infer_dataset
from lvg.runtime.grounder import Grounder
from tests.helpers.artifacts import CORPUS, make_image

ray = pytest.importorskip("ray")


def test_predictor_callable_records_bad_rows(micro, tmp_path):
    """The callable class alone (what each Ray actor holds): numpy batch in, result columns out."""
    rgb = np.asarray(Image.open(micro.image).convert("RGB"))
    pred = GrounderPredictor(micro.onnx, device="cpu")
    batch = {"image": np.array([rgb, np.zeros((2, 2), np.float32), rgb, rgb], dtype=object),
             "text": np.array(["the man on the left", "dog", "   ", "a dog"]), "id": np.array([7, 8, 9, 10])}
    out = pred(batch)
    g = Grounder.load(micro.onnx, device="cpu")
    assert out["id"].tolist() == [7, 8, 9, 10] and "image" not in out
    assert "uint8" in out["error"][1] and not out["has_box"][1]
    assert "empty" in out["error"][2] and not out["has_box"][2]
    refs = g.predict_batch([rgb, rgb], ["the man on the left", "a dog"])  # the good rows: one model call
    for row, ref in zip((0, 3), refs):
        assert out["error"][row] == "" and tuple(out["box"][row]) == ref.box
        assert out["score"][row] == np.float32(ref.score)
        np.testing.assert_array_equal(out["mask"][row], ref.mask)


@pytest.mark.filterwarnings("ignore::lvg.core.tokenizer.TextTruncatedWarning", "ignore::DeprecationWarning")
def test_ray_data_map_batches_equals_the_grounder(micro, tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        path = make_image(tmp_path / f"{i}.png", w=int(rng.integers(40, 160)), h=int(rng.integers(40, 160)), seed=i)
        rows.append({"id": i, "image": np.asarray(Image.open(path).convert("RGB")), "text": CORPUS[i % len(CORPUS)]})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ds = ray.data.from_items(rows)
        out = infer_dataset(ds, micro.onnx, batch_size=8, concurrency=1, device="cpu").take_all()
    finally:
        ray.shutdown()
    g = Grounder.load(micro.onnx, device="cpu")
    assert sorted(r["id"] for r in out) == list(range(24))
    for r in out:
        want = g.predict(rows[r["id"]]["image"], rows[r["id"]]["text"])
        assert r["error"] == "" and bool(r["has_box"]) == (want.box is not None)
        assert tuple(int(v) for v in r["box"]) == (want.box or (-1, -1, -1, -1))
        assert r["score"] == pytest.approx(want.score, abs=1e-6)
        assert json.loads(r["unknown_words"]) == want.unknown_words
        np.testing.assert_array_equal(np.asarray(r["mask"], dtype=bool), want.mask)
