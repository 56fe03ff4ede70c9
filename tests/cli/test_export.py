"""`lvg export` through typer's CliRunner and as a real subprocess; the file it writes is used by infer."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
from PIL import Image
from typer.testing import CliRunner

from lvg.cli import app
from lvg.core import artifact as art


def test_cli_export_onnx_then_infer(artifacts, tmp_path):
    out = tmp_path / "gres.onnx"
    res = CliRunner().invoke(
        app, ["export", "--ckpt", str(artifacts.ckpt["lvg-tiny-gres"]), "--format", "onnx", "--out", str(out), "--json"]
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["onnx"]["path"] == str(out) and report["onnx"]["check"]["passed"]
    assert report["onnx"]["check"]["max_abs_prob"] < 1e-4
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta[art.KEY_FORMAT] == art.FORMAT
    # infer uses the new file.
    overlay = tmp_path / "ov.png"
    res = CliRunner().invoke(
        app, ["infer", str(artifacts.image), "the man on the left", "--model", str(out), "--out", str(overlay),
              "--json"]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["model"]["path"] == str(out) and data["task"] == "gres"
    assert Image.open(overlay).size == (200, 120)


def test_subprocess_export_fp16(artifacts, tmp_path):
    ckpt = tmp_path / "tiny.safetensors"
    ckpt.write_bytes(artifacts.ckpt["lvg-tiny"].read_bytes())
    proc = subprocess.run(
        [sys.executable, "-m", "lvg.cli", "export", "--ckpt", str(ckpt), "--fp16", "--no-simplify"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "tiny.fp16.onnx"  # default name: beside the checkpoint
    assert out.is_file()
    assert "fp16" in proc.stdout and "mask agreement" in proc.stdout
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta[art.KEY_PRECISION] == "fp16"


def test_cli_export_errors(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["export", "--ckpt", str(tmp_path / "missing.safetensors")])
    assert res.exit_code == 2 and "checkpoint not found" in res.output
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    res = runner.invoke(app, ["export", "--ckpt", str(bad)])
    assert res.exit_code == 2 and res.output.startswith("error:") and "Traceback" not in res.output
    res = runner.invoke(app, ["export", "--ckpt", str(tmp_path)])
    assert res.exit_code == 2 and "is a directory" in res.output
    res = runner.invoke(app, ["export", "--ckpt", str(bad), "--format", "tflite"])
    assert res.exit_code == 2 and "unknown --format" in res.output


def test_cli_export_refuses_to_overwrite_inputs_and_checks_outputs_first(artifacts, tmp_path):
    runner = CliRunner()
    ckpt = tmp_path / "tiny.safetensors"
    ckpt.write_bytes(artifacts.ckpt["lvg-tiny"].read_bytes())
    spm = tmp_path / "tok.spm"
    spm.write_bytes(b"not read")
    cases = [
        (["--out", str(ckpt)], "is an input"),
        (["--tokenizer", str(spm), "--out", str(spm)], "is an input"),
        (["--out", str(tmp_path)], "is a directory"),
        (["--opset", "99"], "at most"),
    ]
    for extra, needle in cases:
        res = runner.invoke(app, ["export", "--ckpt", str(ckpt), *extra])
        assert res.exit_code == 2 and needle in res.output and res.output.startswith("error:"), (extra, res.output)
        assert res.stdout.count("\n") <= 1  # one line, no exporter dump
    assert ckpt.read_bytes() == artifacts.ckpt["lvg-tiny"].read_bytes() and spm.read_bytes() == b"not read"
    # A damaged checkpoint is reported as such, not as a missing tokenizer.
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(ckpt.read_bytes()[: len(ckpt.read_bytes()) // 2])
    res = runner.invoke(app, ["export", "--ckpt", str(broken)])
    assert res.exit_code == 2 and "tokenizer" not in res.output and str(broken) in res.output, res.output
