"""``--precision`` on lvg infer / bench / eval: what ran is reported, a missing OpenVINO is named by its extra,
and ``lvg bench`` prints the distance to this machine's matmul rate."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from lvg.cli import app
from lvg.core.precision import ENV, CpuFeatures

NO_OPENVINO = "import sys; sys.modules['openvino'] = None\n"
HAS_BF16 = CpuFeatures.read().bf16


def _lvg(*args: str, pre: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    code = pre + "from lvg.cli import main\nimport sys\nsys.argv = ['lvg', *sys.argv[1:]]\nmain()\n"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, env=env)


def test_bench_reports_precision_and_the_matmul_ceiling(micro):
    res = CliRunner().invoke(app, ["bench", "--model", str(micro.onnx), "--precision", "fp32", "--runs", "2",
                                   "--warmup", "0", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert (data["backend"], data["precision"]) == ("onnxruntime", "fp32")
    assert data["matmul"]["precision"] == "fp32" and data["matmul"]["gflops_per_s"] > 0
    row = data["results"][0]
    assert 0 < row["of_matmul"] == pytest.approx(row["tflops_per_s"] * 1e3 / data["matmul"]["gflops_per_s"], rel=0.02)


def test_infer_without_openvino(micro):
    """bf16 asked for without OpenVINO names the extra (on a CPU without bf16 it says that instead); auto runs
    fp32 on ONNX Runtime and, on a bf16 CPU, notes what to install."""
    env = {k: v for k, v in os.environ.items() if k != ENV}
    common = ("infer", str(micro.image), "the dog", "--model", str(micro.onnx), "--json", "--no-mask")
    asked = _lvg(*common, "--precision", "bf16", pre=NO_OPENVINO, env=env)
    assert asked.returncode != 0 and "Traceback" not in asked.stderr
    want = "pip install 'latent-vg[openvino]'" if HAS_BF16 else "bf16 instructions"
    assert want in asked.stderr
    auto = _lvg(*common, pre=NO_OPENVINO, env=env)
    assert auto.returncode == 0, auto.stderr
    model = json.loads(auto.stdout.splitlines()[-1])["model"]
    assert (model["backend"], model["precision"]) == ("onnxruntime", "fp32")
    assert ("pip install 'latent-vg[openvino]'" in auto.stderr) == HAS_BF16


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 instructions")
def test_infer_bf16_on_openvino(micro):
    pytest.importorskip("openvino")
    res = CliRunner().invoke(app, ["infer", str(micro.image), "the dog", "--model", str(micro.onnx),
                                   "--precision", "bf16", "--json", "--no-mask"])
    assert res.exit_code == 0, res.output
    model = json.loads(res.stdout.splitlines()[-1])["model"]
    assert (model["backend"], model["precision"]) == ("openvino", "bf16")


def test_eval_reports_the_precision_it_ran(synth_dataset):
    res = CliRunner().invoke(app, ["eval", "--data", str(synth_dataset.out_dir), "--split", "val",
                                   "--max-sentences", "4", "--precision", "fp32", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert (data["backend"], data["precision"]) == ("onnxruntime", "fp32") and data["n"] == 4


def test_bench_ratios_keep_their_precision_when_small():
    """The micro model's share of the matmul rate is ~0.01; fixed decimals made it 0.01 for 0.01026."""
    from lvg.cli.bench import _sig

    assert _sig(0.010256410256) == pytest.approx(0.010256410256, rel=1e-3)
    assert _sig(123456.0) == 123500.0
