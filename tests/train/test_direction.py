"""The direction auxiliary loss (lvg.train.direction): labels from the words, and runs that train the
classifier, keep it out of the model's weights and resume exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lvg.modeling import build_model
from lvg.modeling.checkpoint import read_checkpoint_tensors
from lvg.train.config import TrainConfig
from lvg.train.data import open_dataset
from lvg.train.direction import DIRECTIONS, direction_class
from lvg.train.synth.language import expression_kind
from lvg.train.trainer import train


@pytest.mark.parametrize(("text", "direction"), [
    ("the leftmost green star", "left"),
    ("the red circle on the right", "right"),
    ("The topmost small square", "up"),
    ("the star at the bottom", "down"),
    ("the green star left of the red circle", "left"),
    ("the cup above the plate", "up"),
    ("the dog under the table", "down"),
    ("man on left", "left"),
    ("upper right corner", "up"),  # the first direction word decides
    ("the right one to the left of the car", "right"),
    ("the big red shape", None),
    ("a bright light", None),  # "right" inside a word is not a direction
    ("copyright notice", None),
])
def test_direction_class_names_the_first_direction_word(text: str, direction: str | None) -> None:
    assert direction_class(text) == (0 if direction is None else 1 + DIRECTIONS.index(direction))


def test_every_generated_position_and_relation_expression_has_a_direction(synth_dataset) -> None:
    source = open_dataset(synth_dataset.out_dir, split="train", prefer_gres=False)
    kinds = {"attribute": 0, "position": 0, "relation": 0}
    for sample in source.samples:
        for text in sample.sentences:
            kind = expression_kind(text, 1)
            kinds[kind] += 1
            assert (direction_class(text) != 0) == (kind != "attribute"), (kind, text)
    assert min(kinds.values()) > 0, kinds


def _cfg(data: Path, **kw) -> TrainConfig:
    base = dict(variant="lvg-tiny", data=str(data), steps=4, batch_size=4, val_split=None, lr=1e-3,
                warmup_steps=1, log_every=1, save_every=0, seed=11, loss_direction=1.0)
    base.update(kw)
    return TrainConfig(**base)


def test_a_run_with_the_direction_loss_resumes_exactly_and_keeps_the_classifier_out_of_the_model(
        tmp_path: Path, synth_dataset) -> None:
    data = synth_dataset.out_dir
    full = train(_cfg(data), tmp_path / "full", show_progress=False)
    assert all("loss_direction" in row for row in full.history if "loss" in row)
    train(_cfg(data), tmp_path / "split", show_progress=False, stop_at_step=2)
    train(_cfg(data), tmp_path / "split", show_progress=False, resume=True)
    a, b = (read_checkpoint_tensors(tmp_path / run / "last.safetensors") for run in ("full", "split"))
    head = {k for k in a if k.startswith("train/direction_head/")}
    assert head == {"train/direction_head/classifier.weight", "train/direction_head/classifier.bias"}
    assert set(a) == set(b) and [k for k in a if not torch.equal(a[k], b[k])] == []
    # The classifier trained with the model, and the model's own weights are exactly the variant's.
    assert read_checkpoint_tensors(tmp_path / "full" / "last.safetensors", model_only=True).keys() == \
        build_model("lvg-tiny").state_dict().keys()
    # The optimizer moves the classifier: the split run's step-2 checkpoint (now prev) differs from step 4.
    two = read_checkpoint_tensors(tmp_path / "split" / "prev.safetensors")
    assert not torch.equal(two["train/direction_head/classifier.weight"], a["train/direction_head/classifier.weight"])
