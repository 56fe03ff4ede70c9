"""``lvg infer`` on the bad-input matrix (tests/helpers/bad_inputs.py): a one-line ``error: ...`` on stderr,
a non-zero exit and no traceback for every bad case, a valid answer for every unusual valid image. Most cases
run through typer's CliRunner (in-process, fast); a representative subset runs as real subprocesses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lvg.cli import app
from tests.helpers.bad_inputs import (
    BAD_IMAGES,
    BAD_MODELS,
    BAD_TEXTS,
    TEXT,
    VALID_IMAGES,
    bad_image,
    bad_model,
    valid_image,
)
from tests.helpers.micro_model import Micro


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    return Path(tmp_path_factory.mktemp("bad-inputs"))


def _cli(args: list[str]):
    return CliRunner().invoke(app, ["infer", *args])


def _assert_cli_error(res, pattern: str) -> None:
    assert res.exit_code != 0, res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)  # handled, not escaped
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], res.stderr
    assert res.stdout == ""


def test_cli_matrix(micro: Micro, files: Path) -> None:
    model = str(micro.onnx)
    # On the command line a directory is a folder of inputs (lvg infer DIR): an empty one is the error.
    cli_patterns = {**BAD_IMAGES, "directory": "holds no image file"}
    for kind, pattern in cli_patterns.items():
        _assert_cli_error(_cli([str(bad_image(kind, files)), TEXT, "--model", model]), pattern)
    for text in BAD_TEXTS.values():
        _assert_cli_error(_cli([str(micro.image), text, "--model", model]), "text is empty")
    for kind, (_, pattern) in BAD_MODELS.items():
        _assert_cli_error(_cli([str(micro.image), TEXT, "--model", str(bad_model(kind, micro, files))]), pattern)
    _assert_cli_error(_cli([str(micro.image), TEXT, "--model", model, "--threshold", "1.5"]), "threshold")
    _assert_cli_error(_cli([str(micro.image), TEXT, "--model", model, "--out", str(files)]), "is a directory")
    assert not (files / "PWNED").exists()


def test_cli_valid_cases(micro: Micro, files: Path) -> None:
    model = str(micro.onnx)
    for kind in VALID_IMAGES:
        path, expected = valid_image(kind, files)
        res = _cli([str(path), TEXT, "--model", model, "--json"])
        assert res.exit_code == 0, res.output
        data = json.loads(res.stdout)
        assert data["image_size"] == [expected.shape[1], expected.shape[0]]
        assert data["mask_rle"]["size"] == [expected.shape[0], expected.shape[1]]
    res = _cli([str(micro.image), " ".join(["the"] * 2500), "--model", model])
    assert res.exit_code == 0 and res.stderr.startswith("warning: text truncated"), res.output
    assert "mask" in res.stdout
    res = _cli([str(micro.image), " ".join(["the"] * 2500), "--model", model, "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["text_truncated"] is True


def test_cli_unexpected_exception_is_one_line(monkeypatch) -> None:
    # A bug (any non-LVGError exception) becomes one line and exit 1; LVG_DEBUG=1 shows the traceback.
    from lvg.cli._common import handle_errors

    probe = typer.Typer()

    @probe.command()
    @handle_errors
    def crash(kind: str) -> None:
        if kind == "bug":
            raise KeyError("multi\nline")
        if kind == "memory":
            raise MemoryError()
        if kind == "exit":
            raise typer.Exit(7)

    runner = CliRunner()
    res = runner.invoke(probe, ["bug"])
    assert res.exit_code == 1 and res.stderr.count("\n") == 1
    assert res.stderr.startswith("error: internal error: KeyError: 'multi") and "LVG_DEBUG=1" in res.stderr
    res = runner.invoke(probe, ["memory"])
    assert res.exit_code == 1 and res.stderr.startswith("error: out of memory")
    assert runner.invoke(probe, ["exit"]).exit_code == 7  # typer's own exits pass through
    monkeypatch.setenv("LVG_DEBUG", "1")
    res = runner.invoke(probe, ["bug"])
    assert isinstance(res.exception, KeyError)  # re-raised for the traceback


def _lvg() -> list[str]:
    exe = shutil.which("lvg")
    return [exe] if exe else [sys.executable, "-m", "lvg.cli"]


@pytest.mark.parametrize(
    "case",
    ["truncated-jpeg", "pickle-pth", "onnx-wrong-size", "valid-exif"],
)
def test_cli_subprocess(micro: Micro, files: Path, case: str) -> None:
    # Real processes for a representative subset: an image error, a refused pickle, a model that only
    # fails when run (the runtime error path), and a valid EXIF-rotated photo.
    model, image = str(micro.onnx), str(micro.image)
    if case in BAD_IMAGES:
        image, pattern = str(bad_image(case, files)), BAD_IMAGES[case]
    elif case in BAD_MODELS:
        model, pattern = str(bad_model(case, micro, files)), BAD_MODELS[case][1]
    else:
        path, expected = valid_image("exif-rotated", files)
        image, pattern = str(path), ""
    proc = subprocess.run([*_lvg(), "infer", image, TEXT, "--model", model, "--json"], capture_output=True, text=True,
                          timeout=120)
    assert "Traceback" not in proc.stderr
    if pattern:
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and pattern in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["image_size"] == [expected.shape[1], expected.shape[0]]
    assert not (files / "PWNED").exists()
