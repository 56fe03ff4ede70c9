"""Every failure a caller or a file can cause is a one-line LVGError: hostile metadata, paths the system refuses and
arguments of the wrong type, through the Python API and the CLI (real files, real ONNX Runtime sessions)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lvg.cli import app
from lvg.core.model_file import ModelFile
from lvg.core.tokenizer import Tokenizer
from lvg.errors import ArtifactError, CheckpointError, InputError, LVGError
from lvg.runtime.grounder import Grounder
from tests.helpers.hostile import rewrite_safetensors, set_onnx_metadata

TEXT = "the man on the left"
DEEP = "[" * 100_000 + "]" * 100_000


def _one_line(exc: BaseException) -> None:
    assert isinstance(exc, LVGError) and "\n" not in str(exc) and len(str(exc)) < 600, repr(exc)


@pytest.fixture(scope="module")
def grounder(micro) -> Grounder:
    return Grounder.load(micro.onnx, device="cpu")


def _cli_error(args: list[str]) -> str:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert "Traceback" not in res.output and "internal error" not in res.output, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("updates", "pattern"),
    [
        ({"lvg.config": DEEP}, "nested too deeply"),
        ({"lvg.config": '{"encoder": ' * 50_000 + "{}" + "}" * 50_000}, "nested too deeply"),
        ({"lvg.trt_batch": "0"}, "lvg.trt_batch"),
        ({"lvg.trt_batch": "-3"}, "lvg.trt_batch"),
        ({"lvg.gflops_per_sample": "nan"}, "lvg.gflops_per_sample"),
        ({"lvg.precision": "fp8"}, "lvg.precision"),
    ],
)
def test_hostile_onnx_metadata_is_an_artifact_error(micro, tmp_path: Path, updates: dict, pattern: str) -> None:
    bad = set_onnx_metadata(micro.onnx, tmp_path / "bad.onnx", updates)
    with pytest.raises(ArtifactError, match=pattern) as info:
        Grounder.load(bad, device="cpu").predict(micro.image, TEXT)
    _one_line(info.value)
    assert pattern in _cli_error(["infer", str(micro.image), TEXT, "--model", str(bad)])


def test_nan_threshold_in_the_metadata_is_refused_not_an_empty_mask(micro, tmp_path: Path) -> None:
    cfg = json.loads(ModelFile.open(micro.onnx).metadata["lvg.config"])
    cfg["preprocess"]["mask_threshold"] = float("nan")
    bad = set_onnx_metadata(micro.onnx, tmp_path / "nan.onnx", {"lvg.config": json.dumps(cfg)})
    with pytest.raises(ArtifactError, match="mask_threshold"):
        Grounder.load(bad, device="cpu")


@pytest.mark.parametrize("key", ["config", "train_state", "train_config"])
def test_deeply_nested_checkpoint_metadata_is_a_checkpoint_error(micro, tmp_path: Path, key: str) -> None:
    from lvg.train.state import read_resume_point

    bad = rewrite_safetensors(micro.ckpt, tmp_path / "deep.safetensors",
                              metadata={key: DEEP, "train_state": "{}", "train_config": "{}"} | {key: DEEP})
    with pytest.raises(CheckpointError, match="nested too deeply") as info:
        read_resume_point(bad)
    _one_line(info.value)


def test_paths_the_system_refuses_are_typed_errors(micro, grounder: Grounder, tmp_path: Path) -> None:
    long = "x" * 300  # one name component over the usual 255-byte limit
    with pytest.raises(ArtifactError):
        Grounder.load(tmp_path / f"{long}.onnx")
    with pytest.raises(CheckpointError):
        ModelFile.open(tmp_path / f"{long}.safetensors")
    with pytest.raises(InputError):
        grounder.predict(tmp_path / f"{long}.jpg", TEXT)
    with pytest.raises(ArtifactError):
        Tokenizer.from_file(tmp_path / f"{long}.spm")
    with pytest.raises(ArtifactError):
        Grounder.load(micro.onnx, tokenizer=tmp_path / f"{long}.spm")
    # A model whose name leaves no room for its tokenizer sidecar's longer name still opens.
    fits = tmp_path / ("m" * 245 + ".onnx")
    fits.write_bytes(micro.onnx.read_bytes())
    assert ModelFile.open(fits).config.name == "lvg-tiny"
    image, model = str(micro.image), str(micro.onnx)
    _cli_error(["infer", str(tmp_path / f"{long}.jpg"), TEXT, "--model", model])
    _cli_error(["infer", image, TEXT, "--model", str(tmp_path / f"{long}.onnx")])
    _cli_error(["infer", image, TEXT, "--model", model, "--out", str(tmp_path / f"{long}.png")])
    _cli_error(["infer", image, TEXT, "--model", model, "--tokenizer", str(tmp_path / f"{long}.spm")])
    _cli_error(["export", "--ckpt", str(tmp_path / f"{long}.safetensors")])
    _cli_error(["data", "stats", str(tmp_path / long)])


def test_api_arguments_of_the_wrong_type_are_input_errors(micro, grounder: Grounder) -> None:
    image = np.zeros((20, 30, 3), np.uint8)
    calls = [
        lambda: grounder.predict(image, TEXT, task=5),
        lambda: grounder.predict(image, TEXT, mask_threshold="high"),
        lambda: grounder.predict(image, TEXT, return_attention="yes"),
        lambda: grounder.predict_batch(image, [TEXT]),
        lambda: grounder.predict_batch([image], TEXT),
        lambda: grounder.predict_batch([image], [TEXT], task=["ris"]),
        lambda: Grounder.load(123),
        lambda: Grounder.load(micro.onnx, device=5),
        lambda: Grounder.load(micro.onnx, backend=None),
        lambda: Grounder.load(micro.onnx, variant=5),
        lambda: Grounder.load(micro.onnx, tokenizer=5),
    ]
    for call in calls:
        with pytest.raises(InputError) as info:
            call()
        _one_line(info.value)


def test_predict_batch_takes_any_iterable(grounder: Grounder) -> None:
    images = [np.full((20, 30, 3), v, np.uint8) for v in (0, 200)]
    texts = [TEXT, "a dog"]
    from_lists = grounder.predict_batch(images, texts)
    from_generators = grounder.predict_batch((im for im in images), iter(texts))
    assert len(from_generators) == 2
    for a, b in zip(from_lists, from_generators):
        np.testing.assert_array_equal(a.prob, b.prob)
    assert grounder.predict_batch(iter([]), iter([])) == []
