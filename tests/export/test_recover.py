"""``lvg export --format safetensors``: an fp32 ONNX export's weights back as a checkpoint (lvg.export.recover),
exactly, with the file's tokenizer and training domain; other files are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lvg.cli import app
from lvg.core.model_file import ModelFile
from lvg.export.onnx_export import export_onnx
from lvg.modeling.checkpoint import read_checkpoint_tensors
from tests.helpers.artifacts import make_checkpoint


@pytest.mark.parametrize("variant", ["lvg-tiny-xy", "lvg-tiny-gres", "lvg-tiny-xy-stem-tokens",
                                     "lvg-tiny-xy-stem-relpos-branch-tokens-ctx-match"])
def test_the_weights_come_back_exactly(tmp_path: Path, artifacts, variant: str) -> None:
    ckpt = make_checkpoint(variant, tmp_path / "m.safetensors", artifacts.spm, seed=3)
    onnx = tmp_path / "m.onnx"
    export_onnx(ckpt, onnx, check=False, words=["star", "left"], description="two words")
    out = tmp_path / "back" / "w.safetensors"
    res = CliRunner().invoke(app, ["export", "--ckpt", str(onnx), "--format", "safetensors", "--out", str(out),
                                   "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["variant"] == variant and report["max_abs_prob"] < 1e-4
    want, got = read_checkpoint_tensors(ckpt), read_checkpoint_tensors(out)
    assert got.keys() == want.keys() and report["tensors"] == len(want)
    assert [k for k in want if not torch.equal(want[k], got[k])] == []
    back, source = ModelFile.open(out, checkpoint=True), ModelFile.open(onnx)
    assert back.config == source.config
    assert back.tokenizer().identity == source.tokenizer().identity
    assert back.info.domain.words == {"left", "star"} and back.info.domain.description == "two words"


def test_only_an_fp32_onnx_file_is_read(tmp_path: Path, artifacts) -> None:
    runner = CliRunner()
    out = tmp_path / "w.safetensors"
    for source, expect in ((artifacts.onnx[("lvg-tiny", True)], "fp16: only an fp32 export"),
                           (artifacts.ckpt["lvg-tiny"], "reads an .onnx export")):
        res = runner.invoke(app, ["export", "--ckpt", str(source), "--format", "safetensors", "--out", str(out)])
        assert res.exit_code != 0 and expect in res.output and "Traceback" not in res.output, res.output
        assert not out.exists()
    res = runner.invoke(app, ["export", "--ckpt", str(artifacts.onnx[("lvg-tiny", False)]), "--format",
                              "safetensors", "--fp16", "--out", str(out)])
    assert res.exit_code != 0 and "takes the file's weights" in res.output and not out.exists()


def test_the_bundled_model_comes_back(tmp_path: Path) -> None:
    """The documented first step of continuing the recipe: the bundled ONNX file back as a checkpoint that
    reproduces it (checked by the command itself against ONNX Runtime) and holds its config and tokenizer."""
    from lvg.runtime.grounder import default_model_path

    source = default_model_path()
    out = tmp_path / "bundled.safetensors"
    res = CliRunner().invoke(app, ["export", "--ckpt", str(source), "--format", "safetensors", "--out", str(out),
                                   "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["max_abs_prob"] < 1e-4
    back, bundled = ModelFile.open(out, checkpoint=True), ModelFile.open(source)
    assert back.config == bundled.config and report["variant"] == bundled.config.name
    assert back.tokenizer().identity == bundled.tokenizer().identity
