"""`lvg eval` on what a user or a file can get wrong: the task and the dataset layout it needs, and tokenizer
names from a checkpoint's metadata that would reach outside the data folder (real datasets, checkpoints and
the bundled model through typer's CliRunner)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lvg.cli import app
from lvg.config import get_config
from lvg.modeling import build_model, save_checkpoint
from lvg.train.data import open_dataset


def _eval(*args: str):
    return CliRunner().invoke(app, ["eval", *args, "--device", "cpu", "--json"])


def test_rec_on_a_synthetic_dataset_uses_the_refer_layout(synth_dataset) -> None:
    # The bundled model is a GRES model, which alone would pick the gREFER layout, whose no-target refs have no
    # box to score REC against; the task decides the layout.
    res = _eval("--data", str(synth_dataset.out_dir), "--split", "val", "--task", "rec")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    refer = open_dataset(synth_dataset.out_dir, split="val")
    assert data["task"] == "rec" and data["n"] == refer.num_sentences() and "acc@0.5" in data


def test_rec_on_grefer_data_scores_the_refs_that_have_a_target(synth_dataset) -> None:
    spec = f"{synth_dataset.out_dir}:grefcoco-synth"
    grefer = open_dataset(spec, split="val")
    no_target = sum(len(s.sentences) for s in grefer.samples if s.no_target)
    assert no_target > 0
    res = _eval("--data", spec, "--split", "val", "--task", "rec")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["task"] == "rec" and data["n"] == grefer.num_sentences() - no_target
    assert "no target" in res.stderr and "warning:" in res.stderr


def _bare_checkpoint(path: Path, tokenizer_name: str) -> Path:
    """An lvg-tiny checkpoint without an embedded tokenizer whose config names ``tokenizer_name``."""
    from dataclasses import replace

    cfg = get_config("lvg-tiny")
    cfg = cfg.replace(preprocess=replace(cfg.preprocess, tokenizer=tokenizer_name))
    torch.manual_seed(0)
    return save_checkpoint(build_model(cfg), path)


@pytest.mark.parametrize("name", ["../outside/secret.spm", "/ABS/secret.spm", "sub/../../outside/secret.spm"])
def test_a_tokenizer_name_from_metadata_never_reaches_outside_the_data(tmp_path: Path, synth_dataset,
                                                                       name: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(synth_dataset.tokenizer, outside / "secret.spm")  # a file lvg must not be led to read
    data = tmp_path / "data"
    shutil.copytree(synth_dataset.out_dir, data)
    ckpt = _bare_checkpoint(tmp_path / "bare.safetensors", name.replace("/ABS", str(tmp_path / "outside")))
    res = _eval("--ckpt", str(ckpt), "--data", str(data), "--split", "val", "--max-sentences", "2")
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: ") and "not a plain file name" in res.stderr, res.stderr


def test_a_tokenizer_linked_from_outside_the_data_folder_is_refused(tmp_path: Path, synth_dataset) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    data = tmp_path / "data"
    shutil.copytree(synth_dataset.out_dir, data)
    spm = data / Path(synth_dataset.tokenizer).name
    shutil.move(spm, outside / "secret.spm")
    spm.symlink_to(outside / "secret.spm")
    ckpt = _bare_checkpoint(tmp_path / "bare.safetensors", spm.name)
    res = _eval("--ckpt", str(ckpt), "--data", str(data), "--split", "val", "--max-sentences", "2")
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: ") and "outside its folder" in res.stderr, res.stderr
    # The same file, really in the data folder, is used.
    spm.unlink()
    shutil.copy(outside / "secret.spm", spm)
    res = _eval("--ckpt", str(ckpt), "--data", str(data), "--split", "val", "--max-sentences", "2")
    assert res.exit_code == 0, res.output
