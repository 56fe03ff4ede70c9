"""Calibration inputs for int8: real sentences of the training split, two disjoint seeded draws, preprocessed
as the runtime preprocesses a request."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lvg.core.model_file import ModelFile
from lvg.core.preprocess import preprocess_image
from lvg.errors import InputError
from lvg.train.calibration import MAX_CALIBRATION_SAMPLES, calibration_sets
from lvg.train.data import open_dataset


@pytest.fixture(scope="module")
def model_file(artifacts) -> ModelFile:
    return ModelFile.open(artifacts.onnx[("lvg-tiny", False)])


def test_two_disjoint_seeded_draws_of_training_sentences(synth_dataset, model_file):
    data = str(synth_dataset.out_dir)
    calib, check, record = calibration_sets(data, model_file, samples=12, check_samples=5, seed=3)
    assert (len(calib), len(check)) == (12, 5)
    assert not set(calib.picks) & set(check.picks)
    train = set(open_dataset(data, split="train").sentences_flat())
    assert set(calib.picks) | set(check.picks) <= train
    again, _, _ = calibration_sets(data, model_file, samples=12, check_samples=5, seed=3)
    other, _, _ = calibration_sets(data, model_file, samples=12, check_samples=5, seed=4)
    assert again.picks == calib.picks and other.picks != calib.picks
    assert record == {"data": "refcoco-synth(unc)", "split": "train", "seed": 3, "check_samples": 5}


def test_inputs_are_the_runtime_preprocessing_of_each_pick(synth_dataset, model_file):
    calib, _, _ = calibration_sets(str(synth_dataset.out_dir), model_file, samples=3, check_samples=1)
    cfg, tok = model_file.config, model_file.tokenizer(None)
    feeds = list(calib)
    assert len(feeds) == 3
    for (index, text), feed in zip(calib.picks, feeds):
        s, length = cfg.encoder.img_size, cfg.preprocess.max_text_len
        assert feed["image"].shape == (1, 3, s, s) and feed["image"].dtype == np.float32
        assert feed["text_ids"].shape == (1, length) and feed["text_ids"].dtype == np.int64
        assert feed["text_mask"].dtype == bool
        image, _ = preprocess_image(calib.source.load_image(index), cfg.preprocess)
        ids, mask, _ = tok.encode_checked(text, length)
        np.testing.assert_array_equal(feed["image"][0], image)
        np.testing.assert_array_equal(feed["text_ids"][0], ids)
        np.testing.assert_array_equal(feed["text_mask"][0], mask)


def test_counts_are_checked_before_anything_is_read(synth_dataset, model_file):
    data = str(synth_dataset.out_dir)
    n = len(open_dataset(data, split="train").sentences_flat())
    for bad in (0, MAX_CALIBRATION_SAMPLES + 1):
        with pytest.raises(InputError, match="calibration samples must be"):
            calibration_sets(data, model_file, samples=bad)
    for too_many in (n, n + 1):  # n would leave no sentence to check the int8 file on
        with pytest.raises(InputError, match=f"holds {n} sentences.*leave none to check"):
            calibration_sets(data, model_file, samples=too_many)
    with pytest.raises(InputError, match="check samples must be"):
        calibration_sets(data, model_file, samples=4, check_samples=0)
    # The check draw takes what is left when the split is small.
    calib, check, record = calibration_sets(data, model_file, samples=n - 2, check_samples=16)
    assert (len(calib), len(check), record["check_samples"]) == (n - 2, 2, 2)
    with pytest.raises(InputError):
        calibration_sets(str(synth_dataset.out_dir / "missing"), model_file, samples=4)


def test_a_gres_model_reads_the_grefer_layout(synth_dataset, artifacts):
    """As lvg train does: a GRES model is calibrated on the gREFER sentences (multi- and no-target ones too)."""
    gres = ModelFile.open(artifacts.onnx[("lvg-tiny-gres", False)])
    _, _, record = calibration_sets(str(synth_dataset.out_dir), gres, samples=4)
    assert record["data"] == "grefcoco-synth(unc)"


def test_missing_images_are_refused_before_any_model_runs(synth_dataset, model_file, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_dataset.out_dir, data)
    for image in (data / "images").iterdir():
        image.unlink()
    with pytest.raises(InputError, match="image .* is missing"):
        calibration_sets(str(data), model_file, samples=4)
