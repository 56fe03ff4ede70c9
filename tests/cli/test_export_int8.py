"""`lvg export --int8 --calib DATA` as a user runs it: from an fp32 export or from a checkpoint, then the file
it writes answers `lvg infer` at int8 only."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import onnx
import pytest

from lvg.core import artifact as art

#: The tiny random-weight models put many probabilities near the threshold (see tests/export/test_int8.py).
AGREEMENT = "0.95"


def _lvg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lvg.cli", *args], capture_output=True, text=True, timeout=300)


def _meta(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_int8_from_an_fp32_export_then_infer(artifacts, synth_dataset, tmp_path):
    src = tmp_path / "tiny.onnx"
    src.write_bytes(artifacts.onnx[("lvg-tiny-gres", False)].read_bytes())
    proc = _lvg("export", "--ckpt", str(src), "--int8", "--calib", str(synth_dataset.out_dir), "--calib-samples",
                "12", "--min-agreement", AGREEMENT)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "tiny.int8.onnx"  # default name: beside its source
    assert f"wrote {out} (int8" in proc.stdout and "calibrated on 12 sentences" in proc.stdout
    assert "mask agreement" in proc.stdout and "no-target decision unchanged" in proc.stdout
    assert "WARNING" not in proc.stderr
    meta = _meta(out)
    assert meta[art.KEY_PRECISION] == "int8" and json.loads(meta[art.KEY_CALIBRATION])["samples"] == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.int8.onnx", "tiny.onnx"]

    res = _lvg("info", "--model", str(out))
    # A GRES model is calibrated on the gREFER layout of the folder, as it was trained.
    assert res.returncode == 0 and "int8 (calibrated on 12 sentences of grefcoco-synth(unc), train split, seed 0)" in (
        res.stdout)
    res = _lvg("infer", str(artifacts.image), "the red cup", "--model", str(out), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["model"]["precision"] == "int8"
    res = _lvg("bench", "--model", str(out), "--runs", "2", "--warmup", "0", "--json")
    assert res.returncode == 0, res.stderr
    bench = json.loads(res.stdout)
    assert bench["precision"] == "int8"
    assert bench["matmul"] is None if importlib.util.find_spec("openvino") is None else (
        bench["matmul"]["precision"] == "int8" and bench["results"][0]["of_matmul"] > 0)
    res = _lvg("infer", str(artifacts.image), "the red cup", "--model", str(out), "--precision", "fp32")
    assert res.returncode == 2 and res.stderr.startswith("error: this file is quantised to int8")
    assert len(res.stderr.strip().splitlines()) == 1


def test_int8_from_a_checkpoint_writes_both_files(artifacts, synth_dataset, tmp_path):
    ckpt = tmp_path / "tiny.safetensors"
    ckpt.write_bytes(artifacts.ckpt["lvg-tiny"].read_bytes())
    proc = _lvg("export", "--ckpt", str(ckpt), "--int8", "--calib", f"{synth_dataset.out_dir}:refcoco-synth",
                "--calib-samples", "8", "--min-agreement", AGREEMENT, "--no-simplify", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["onnx"]["precision"] == "fp32" and report["onnx"]["path"] == str(tmp_path / "tiny.onnx")
    assert report["int8"]["path"] == str(tmp_path / "tiny.int8.onnx") and report["int8"]["check_samples"] > 0
    assert _meta(tmp_path / "tiny.int8.onnx")[art.KEY_PRECISION] == "int8"


@pytest.mark.parametrize(("extra", "message"), [
    (["--int8"], "--int8 needs --calib DATA"),
    (["--calib", "DATA"], "add --int8"),
    (["--int8", "--calib", "DATA", "--fp16"], "does not combine"),
    (["--int8", "--calib", "DATA", "--format", "trt"], "does not combine"),
    (["--int8", "--calib", "DATA", "--min-agreement", "2"], "must lie in [0, 1]"),
    (["--int8", "--calib", "{missing}"], "missing"),
    (["--int8", "--calib", "{data}", "--calib-samples", "100000"], "calibration samples must be"),
    (["--int8", "--calib", "{data}", "--min-agreement", "1"], "mask pixels"),
    (["--int8", "--calib", "{data}", "--out", "{tmp}/m.int8.txt"], "name it *.onnx"),
    (["--int8", "--calib", "{data}", "--calib-split", "val", "--calib-samples", "500"], "'val' split holds"),
    (["--int8", "--calib", "{data}", "--description", "x"], "shape an export from a checkpoint"),
])
def test_bad_int8_requests_are_one_line_errors_and_write_nothing(artifacts, synth_dataset, tmp_path, extra, message):
    src = tmp_path / "tiny.onnx"
    src.write_bytes(artifacts.onnx[("lvg-tiny", False)].read_bytes())
    args = [a.format(missing=tmp_path / "missing", data=synth_dataset.out_dir, tmp=tmp_path) for a in extra]
    if "--calib-samples" not in args:
        args += ["--calib-samples", "8"]
    proc = _lvg("export", "--ckpt", str(src), *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.onnx"]


def test_an_int8_or_fp16_source_is_refused_before_its_data_is_read(artifacts, tmp_path):
    src = tmp_path / "half.onnx"
    src.write_bytes(artifacts.onnx[("lvg-tiny", True)].read_bytes())
    proc = _lvg("export", "--ckpt", str(src), "--int8", "--calib", str(tmp_path / "no-such-data"))
    assert proc.returncode == 2 and "starts from an fp32 .onnx export" in proc.stderr and "fp16" in proc.stderr


def test_a_failed_int8_step_takes_back_the_fp32_export_it_made(artifacts, synth_dataset, tmp_path):
    ckpt = tmp_path / "tiny.safetensors"
    ckpt.write_bytes(artifacts.ckpt["lvg-tiny"].read_bytes())
    proc = _lvg("export", "--ckpt", str(ckpt), "--int8", "--calib", str(synth_dataset.out_dir), "--calib-samples",
                "8", "--min-agreement", "1", "--no-check", "--no-simplify")
    assert proc.returncode == 2 and "mask pixels" in proc.stderr, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]
