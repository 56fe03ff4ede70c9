"""`lvg info` through typer's runner and as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from lvg.cli import app
from lvg.modeling import build_model, save_checkpoint

runner = CliRunner()


def test_info_json_for_the_paper_variant():
    result = runner.invoke(app, ["info", "--variant", "lvg-b", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert abs(data["params"]["total"] - 267e6) / 267e6 < 0.02
    assert data["tokens"] == {"vision": 901, "text": 40, "latent": 18, "total": 959}
    assert data["gflops"]["total"] == round(data["flops"]["total"] / 1e9, 3)
    assert data["config"]["latent"]["lengths"] == [4, 10]


def test_info_table_and_checkpoint(tmp_path):
    path = save_checkpoint(build_model("lvg-tiny"), tmp_path / "m.safetensors")
    result = runner.invoke(app, ["info", "--ckpt", str(path)])
    assert result.exit_code == 0, result.output
    assert "lvg-tiny" in result.output and "GFLOPs" in result.output


def test_info_errors_are_one_line_and_nonzero(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_text("nope")
    for args in (["info", "--variant", "lvg-zz"], ["info"], ["info", "--ckpt", str(bad)]):
        proc = subprocess.run([sys.executable, "-m", "lvg.cli", *args], capture_output=True, text=True)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert "Traceback" not in proc.stderr
