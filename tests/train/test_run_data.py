"""A run's data: its splits, and the tokenizer that reads their text (the weights' own before the data's)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from lvg.config import get_config
from lvg.core.artifact import tokenizer_metadata
from lvg.core.tokenizer import Tokenizer, train_sentencepiece
from lvg.errors import ConfigError, InputError
from lvg.modeling import build_model, save_checkpoint
from lvg.train.config import TrainConfig
from lvg.train.run_data import build_data
from tests.helpers.artifacts import CORPUS


def test_init_from_trains_with_the_checkpoints_tokenizer(tmp_path: Path, synth_dataset) -> None:
    own = Tokenizer.from_file(train_sentencepiece(CORPUS * 3, tmp_path / "own.spm", vocab_size=120, seed=0))
    ckpt = save_checkpoint(build_model("lvg-tiny"), tmp_path / "init.safetensors",
                           metadata=tokenizer_metadata(own.model_bytes, own.identity))
    cfg = TrainConfig(variant="lvg-tiny", data=str(synth_dataset.out_dir), init_from=str(ckpt), steps=4, val_split=None)
    model_cfg = get_config("lvg-tiny")
    assert build_data(cfg, model_cfg).tokenizer.model_bytes == own.model_bytes
    beside = Path(synth_dataset.tokenizer).read_bytes()
    assert build_data(cfg.replace(init_from=None), model_cfg).tokenizer.model_bytes == beside


def test_tokenizer_larger_than_the_vocabulary_is_a_clear_error(tmp_path: Path, synth_dataset) -> None:
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 7))) for _ in range(3000)]
    big = train_sentencepiece([" ".join(words[i : i + 8]) for i in range(0, 3000, 8)], tmp_path / "big.spm",
                              vocab_size=900)
    cfg = TrainConfig(variant="lvg-tiny", data=str(synth_dataset.out_dir), tokenizer=str(big), steps=1)
    with pytest.raises(ConfigError, match="embeds only 512"):
        build_data(cfg, build_model("lvg-tiny").cfg)
    # A dataset without its tokenizer names the file it looked for; no dataset at all is that error first.
    data = tmp_path / "data"
    shutil.copytree(synth_dataset.out_dir, data)
    (data / Path(synth_dataset.tokenizer).name).unlink()
    with pytest.raises(ConfigError, match="synthetic.spm"):
        build_data(TrainConfig(variant="lvg-tiny", data=str(data), steps=1), build_model("lvg-tiny").cfg)
    with pytest.raises(InputError, match="no refs"):
        build_data(TrainConfig(variant="lvg-tiny", data=str(tmp_path), steps=1), build_model("lvg-tiny").cfg)


def test_the_per_patch_shape_labels_take_the_runs_minimum_cover(synth_dataset) -> None:
    cfg = TrainConfig(variant="lvg-tiny", data=str(synth_dataset.out_dir), steps=1, val_split=None,
                      loss_patch_shape=1.0, patch_shape_cover=0.1)
    model_cfg = get_config("lvg-tiny")
    assert build_data(cfg, model_cfg).train.patch_labels.min_cover == 0.1
    assert build_data(cfg.replace(patch_shape_cover=0.3), model_cfg).train.patch_labels.min_cover == 0.3


@pytest.mark.parametrize("cover", [0.0, -0.2, 1.0, 1.01])
def test_a_minimum_patch_cover_outside_zero_to_one_is_a_config_error(cover: float) -> None:
    with pytest.raises(ConfigError, match=f"patch_shape_cover must lie in \\(0, 1\\), got {cover}"):
        TrainConfig(patch_shape_cover=cover)
