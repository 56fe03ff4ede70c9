"""Outputs are whole or absent: every file a command writes goes through a temporary file in the same folder and a
rename, a command that fails leaves none of its new outputs, and SIGTERM / SIGKILL leave no temporary files or
folders behind (lvg/core/atomic.py, lvg/runtime/result.py, lvg/export, lvg/cli). Real processes, a real write
failure (a file-size limit on the process) and real signals."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from lvg.cli import app

TEXT = "the man on the left"


def _limited(max_bytes: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def _lvg(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen([sys.executable, "-m", "lvg.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **kw)


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_a_failed_write_leaves_the_existing_output_intact(micro, tmp_path: Path) -> None:
    out = tmp_path / "overlay.png"
    before = os.urandom(20_000)
    out.write_bytes(before)
    # The overlay of the 200 x 120 noise image is ~70 KB: with files limited to 8 KB the write fails half-way.
    proc = _lvg("infer", str(micro.image), TEXT, "--model", str(micro.onnx), "--out", str(out),
                preexec_fn=_limited(8192))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "overlay.png" in _one_error_line(stderr)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlay.png"]


def test_a_multi_output_command_that_fails_leaves_none_of_its_outputs(micro, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    overlay = tmp_path / "a.png"
    res = CliRunner().invoke(app, ["infer", str(micro.image), TEXT, "--model", str(micro.onnx), "--out", str(overlay),
                                   "--mask", str(blocker / "mask.png")])
    assert res.exit_code == 2 and res.stderr.startswith("error: "), res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    # An existing overlay is left as it was, not replaced by the new one of a command that failed.
    overlay.write_bytes(b"old")
    res = CliRunner().invoke(app, ["infer", str(micro.image), TEXT, "--model", str(micro.onnx), "--out", str(overlay),
                                   "--mask", str(blocker / "mask.png")])
    assert res.exit_code == 2 and overlay.read_bytes() == b"old"


def _export_until_it_writes(ckpt: Path, out_dir: Path, sig: int) -> subprocess.Popen:
    """Start ``lvg export`` into ``out_dir`` and send ``sig`` as soon as anything appears there."""
    proc = _lvg("export", "--ckpt", str(ckpt), "--out", str(out_dir / "model.onnx"), "--no-check")
    deadline = time.monotonic() + 120
    while not any(out_dir.iterdir()) and proc.poll() is None:
        assert time.monotonic() < deadline, "export never wrote anything"
        time.sleep(0.002)
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    return proc


def test_sigterm_during_export_leaves_nothing_in_the_output_folder(artifacts, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _export_until_it_writes(artifacts.ckpt["lvg-tiny"], out_dir, signal.SIGTERM)
    if proc.returncode == 0:  # it finished before the signal: only its output is there
        assert [p.name for p in out_dir.iterdir()] == ["model.onnx"]
        return
    assert proc.returncode == 143
    assert list(out_dir.iterdir()) == []


def test_sigkill_during_export_leaves_no_folder_and_the_next_export_cleans_up(artifacts, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    _export_until_it_writes(artifacts.ckpt["lvg-tiny"], out_dir, signal.SIGKILL)
    assert not [p for p in out_dir.iterdir() if p.is_dir()]  # at most a temporary file of the dead process
    again = _lvg("export", "--ckpt", str(artifacts.ckpt["lvg-tiny"]), "--out", str(out_dir / "model.onnx"),
                 "--no-check")
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert [p.name for p in out_dir.iterdir()] == ["model.onnx"]
