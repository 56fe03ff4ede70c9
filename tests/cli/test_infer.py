"""`lvg infer` and `lvg bench` through typer's CliRunner and as real subprocesses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lvg.cli import app
from lvg.runtime.grounder import Grounder

TEXT = "the man on the left"



def test_infer_writes_overlay_mask_and_json(artifacts, tmp_path):
    model = artifacts.onnx[("lvg-tiny", False)]
    ov, mk = tmp_path / "ov.png", tmp_path / "mask.png"
    res = CliRunner().invoke(
        app, ["infer", str(artifacts.image), TEXT, "--model", str(model), "--out", str(ov), "--mask", str(mk), "--json"]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    ref = Grounder.load(model, device="cpu").predict(artifacts.image, TEXT)
    assert data["box"] == list(ref.box) and data["mask_area"] == int(ref.mask.sum())
    assert data["outputs"] == {"overlay": str(ov), "mask": str(mk)}
    np.testing.assert_array_equal(np.asarray(Image.open(mk)) == 255, ref.mask)
    overlay = np.asarray(Image.open(ov).convert("RGB"))
    np.testing.assert_array_equal(overlay, ref.overlay())
    # Outside the mask (and away from box and label) the overlay is the untouched image.
    img = np.asarray(Image.open(artifacts.image).convert("RGB"))
    far = ~ref.mask
    far[: 20, :] = False  # label row
    x1, y1, x2, y2 = ref.box
    far[max(y1 - 1, 0) : y2 + 1, max(x1 - 1, 0) : x2 + 1] = False
    np.testing.assert_array_equal(overlay[far], img[far])


def test_infer_human_output_and_task(artifacts):
    res = CliRunner().invoke(
        app, ["infer", str(artifacts.image), TEXT, "--model", str(artifacts.onnx[("lvg-tiny-gres", False)]),
              "--task", "rec"]
    )
    assert res.exit_code == 0, res.output
    assert "box [" in res.stdout and "time" in res.stdout


def test_infer_errors_are_one_line(artifacts, tmp_path):
    runner = CliRunner()
    model = str(artifacts.onnx[("lvg-tiny", False)])
    cases = [
        (["infer", str(tmp_path / "nope.jpg"), TEXT, "--model", model], "not found"),
        (["infer", str(artifacts.image), "", "--model", model], "empty"),
        (["infer", str(artifacts.image), TEXT, "--model", str(tmp_path / "m.pt")], "unknown model file type"),
        (["infer", str(artifacts.image), TEXT, "--model", str(tmp_path)], "is a directory"),
        (["infer", str(artifacts.image), TEXT, "--model", model, "--task", "gres"], "no-target head"),
        (["infer", str(artifacts.image), TEXT, "--model", model, "--task", "xyz"], "unknown task"),
    ]
    not_image = tmp_path / "text.png"
    not_image.write_text("hello")
    cases.append((["infer", str(not_image), TEXT, "--model", model], "error:"))
    for args, needle in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert needle in res.output and res.output.startswith("error:") and "Traceback" not in res.output


def test_infer_never_overwrites_its_inputs_and_writes_the_named_format(artifacts, tmp_path):
    runner = CliRunner()
    model = tmp_path / "m.onnx"
    shutil.copy(artifacts.onnx[("lvg-tiny", False)], model)
    image = tmp_path / "photo.jpg"
    shutil.copy(artifacts.image, image)
    before = {p: p.read_bytes() for p in (model, image)}
    cases = [
        (["--out", str(image)], "--out"),
        (["--mask", str(tmp_path / "." / "photo.jpg")], "--mask"),  # the same file by another spelling
        (["--out", str(model)], "--out"),
        (["--out", str(tmp_path / "a.png"), "--mask", str(tmp_path / "a.png")], "name the same file"),
        (["--mask", str(tmp_path / "mask.jpg")], "lossy"),
        (["--out", str(tmp_path / "ov.nosuchformat")], "unknown image suffix"),
    ]
    for extra, needle in cases:
        res = runner.invoke(app, ["infer", str(image), TEXT, "--model", str(model), *extra])
        assert res.exit_code == 2 and needle in res.output and res.output.startswith("error:"), (extra, res.output)
    assert {p: p.read_bytes() for p in before} == before
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "mask.jpg").exists()
    # A JPEG overlay is a JPEG file; a mask without a suffix is a PNG.
    res = runner.invoke(app, ["infer", str(image), TEXT, "--model", str(model), "--out", str(tmp_path / "ov.jpg"),
                              "--mask", str(tmp_path / "mask")])
    assert res.exit_code == 0, res.output
    with Image.open(tmp_path / "ov.jpg") as overlay, Image.open(tmp_path / "mask") as mask:
        assert overlay.format == "JPEG" and mask.format == "PNG"


def test_bench_table_and_json(artifacts):
    model = str(artifacts.onnx[("lvg-tiny", False)])
    res = CliRunner().invoke(app, ["bench", "--model", model, "--batch", "1,2", "--runs", "3", "--warmup", "1"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert "GFLOPs/sample" in lines[0] and "p50 ms" in lines[1]
    assert [ln.split()[0] for ln in lines[2:]] == ["1", "2"]
    res = CliRunner().invoke(app, ["bench", "--model", model, "--batch", "2", "--runs", "3", "--json"])
    data = json.loads(res.stdout)
    row = data["results"][0]
    assert row["batch"] == 2 and row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
    assert row["throughput_per_s"] == pytest.approx(2e3 / row["mean_ms"], rel=1e-2)
    assert data["gflops_per_sample"] > 0 and data["device"] == "onnxruntime:CPUExecutionProvider"
    res = CliRunner().invoke(app, ["bench", "--model", model, "--batch", "0"])
    assert res.exit_code == 2 and "positive" in res.output


def test_subprocess_infer_and_bench(artifacts, tmp_path):
    exe = shutil.which("lvg")
    base = [exe] if exe else [sys.executable, "-m", "lvg.cli"]
    ov = tmp_path / "ov.png"
    model = str(artifacts.onnx[("lvg-tiny-gres", True)])
    proc = subprocess.run(
        [*base, "infer", str(artifacts.image), TEXT, "--model", model, "--out", str(ov), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["task"] == "gres" and Image.open(ov).size == (200, 120)
    proc = subprocess.run(
        [sys.executable, "-m", "lvg.cli", "bench", "--model", model, "--runs", "2", "--warmup", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "samples/s" in proc.stdout
    proc = subprocess.run(
        [*base, "infer", str(tmp_path / "missing.png"), TEXT, "--model", model], capture_output=True, text=True,
        timeout=60
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
