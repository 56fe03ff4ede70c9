"""benchmarks/gpu_check.sh without a GPU: every GPU step skips with its reason, the commands it would run
parse, and the summary turns CUDA results into issue 22's targets. Also the CUDA-side analysis of
bench_e2e.py and bench_vci.py on made-up numbers, and bench_train_step.py's step on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))

import _gpu_check  # noqa: E402
import bench_e2e  # noqa: E402
import bench_train_step  # noqa: E402
import bench_vci  # noqa: E402
from _e2e_prepare import Case  # noqa: E402
from _e2e_report import _summarise, analyse  # noqa: E402

GPU_STEPS = ("pytest", "vci", "train", "e2e")


def test_dry_run_skips_every_gpu_step_with_its_reason(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # No install (it needs setuptools in this environment; the device has it); a hidden GPU, if any.
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "STEPS": " ".join(GPU_STEPS),
           "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = json.loads((out / "gpu_check.json").read_text())
    reason = state["env"]["skip_reason"]
    assert reason.startswith("no CUDA device")
    assert state["steps"]["install"]["status"] == "skipped"
    assert state["steps"]["install"]["reason"].startswith("not selected")
    for step in GPU_STEPS:
        assert state["steps"][step]["status"] == "skipped" and state["steps"][step]["reason"] == reason, step
        assert f"{step}: skipped: no CUDA device" in proc.stdout
    assert [t["met"] for t in state["targets"]] == [None] * 4
    # The final table closes the output: one line per step, then the targets.
    tail = proc.stdout.strip().splitlines()
    assert tail[-5].startswith("target") and tail[-4].startswith("Triton VCI vs the eager reference")
    assert [line.split()[:2] for line in tail[-10:-5]] == [[s, "skipped"] for s in ("install", *GPU_STEPS)]
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["gpu_check.json", "gpu_check.log"]

    # The commands the device would run parse as their programs expect.
    commands = {step: state["steps"][step]["command"] for step in GPU_STEPS}
    assert commands["pytest"][1:] == ["-m", "pytest", "tests/kernels", "tests/modeling", "-m", "gpu or not slow", "-q",
                                      "-p", "no:cacheprovider"]
    vci = bench_vci.parse_args(commands["vci"][2:])
    assert vci.batches == [1, 8, 64] and vci.name == "cuda" and vci.no_compile
    train = bench_train_step.parse_args(commands["train"][2:])
    assert (train.variant, train.batch, train.amp, train.device, train.name) == ("lvg-b", 16, "bf16", "cuda", "cuda")
    e2e = bench_e2e.parse_args(commands["e2e"][2:])
    assert e2e.device == "cuda" and e2e.batches == [1, 64, 8] and e2e.precisions == ["bf16", "fp16"]
    assert e2e.models == ["lvg"] and e2e.compile_batches == [1, 64] and 0 < e2e.budget_s < 420


def _fake_e2e(batches: list[int]) -> dict:
    """A CUDA e2e result as bench_e2e.py builds it, from made-up samples (no GPU)."""
    cost = {"name": "lvg-b", "params_m": 265.5, "gflops": 200.0, "encoder_gflops": 150.0, "tokens": 959}
    costs = {"lvg": cost, "nolatent": {**cost, "gflops": 195.0}, "encoder": {**cost, "gflops": 160.0}}
    cases = [Case("lvg", "eager", "bf16", "cuda", tuple(batches)),
             Case("lvg", "compile", "bf16", "cuda", tuple(batches), cuda_graphs=True),
             Case("lvg", "compile", "bf16", "cuda", tuple(batches), impl="triton", cuda_graphs=True)]
    model_ms = {("eager", 1): 9.0, ("compile", 1): 2.2, ("eager", 64): 80.0, ("compile", 64): 40.0}
    rows = []
    for case in cases:
        for b in batches:
            ms = model_ms[(case.backend, b)] * (0.9 if case.impl == "triton" else 1.0)
            samples = [{"total_ms": ms + 5, "pre_ms": 3.0, "model_ms": ms, "post_ms": 2.0} for _ in range(3)]
            # The forward on device: 25.6 TFLOP at batch 64 in 32 ms -> 800 TFLOP/s... made 2x slower below.
            stats = {"device_ms": {str(b): {"p50": ms * 0.8, "min": ms * 0.8, "n": 3}}, "matmul_tflops": 800.0}
            rows.append(_summarise(case, b, samples, stats, costs["lvg"]))
    return {"device": {"kind": "cuda"}, "settings": {"batches": batches, "precisions": ["bf16", "fp16"]},
            "models": costs, "results": rows, "skipped": []}


def test_e2e_cuda_rows_report_device_rates_against_the_same_process_probe() -> None:
    result = _fake_e2e([1, 64])
    analyse(result)
    row = next(r for r in result["results"] if r["label"] == "lvg/compile-bf16+cudagraphs/vci-triton"
               and r["batch"] == 64)
    assert row["device_tflops"] == pytest.approx(200.0 * 64 / (40.0 * 0.9 * 0.8))
    assert row["matmul_fraction"] == pytest.approx(row["device_tflops"] / 800.0)
    targets = {t["target"].split(" (")[0]: t for t in result["targets"]}
    share = targets["batch-64 model throughput >= 50% of the dense bf16 matmul rate measured in the same process"]
    assert share["value"] == pytest.approx(row["matmul_fraction"]) and share["met"] == (row["matmul_fraction"] >= 0.5)
    b1 = targets["batch-1 model latency"]
    assert b1["value"] == pytest.approx(2.2 * 0.9) and b1["met"] and b1["limit"] == 2.5
    names = {r["name"] for r in result["ratios"]}
    assert "vci-triton / vci-reference (lvg, compile-bf16+cudagraphs)" in names


def test_summary_checks_issue_22_targets_from_the_cuda_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    e2e = _fake_e2e([1, 64])
    (out / "results" / "e2e_cuda.json").write_text(json.dumps(e2e))
    rows = [{"batch": 64, "impl": "reference", "ms": 3.0, "x_floor": 6.0, "speedup_vs_eager_ref": 1.0},
            {"batch": 64, "impl": "triton", "ms": 0.8, "x_floor": 1.6, "speedup_vs_eager_ref": 3.75}]
    (out / "results" / "bench_vci_cuda.json").write_text(json.dumps(
        {"dtype": "fp16", "copy_bandwidth_gbps": 4300.0, "rows": rows, "targets": bench_vci._targets(rows)}))
    (out / "results" / "train_step_cuda.json").write_text(json.dumps(
        {"batch": 16, "amp": "bf16", "step_ms": {"p50": 100.0}, "samples_per_s": 160.0, "peak_allocated_mib": 20480.0,
         "matmul_fraction": 0.3}))
    state = _gpu_check.load(out)
    state["env"] = {"device": "NVIDIA H200", "torch": "2.11.0+cu130", "triton": "3.6.0"}
    _gpu_check.save(out, state)
    _gpu_check.record(out, "pytest", "ok", 90.0)
    table = _gpu_check.summary(out)
    got = {t["target"].split(" (")[0]: (t["value"], t["met"]) for t in _gpu_check.load(out)["targets"]}
    assert got["Triton VCI vs the eager reference, batch 64"] == (3.75, True)
    assert got["Triton VCI time over the bandwidth floor, batch 64"] == (1.6, True)
    assert got["lvg-b batch-1 model latency, compile + CUDA graphs"] == (pytest.approx(1.98), True)
    assert "NVIDIA H200" in table and "README rows:" in table and "| 160.0 (20.0 GiB) |" in table
    assert bench_vci._targets(rows)["met"] is True


def test_pytest_summary_line_is_found_in_either_format() -> None:
    log = "....F.s\nFAILED tests/kernels/test_vci.py::test_x - AssertionError\n1 failed, 5 passed, 1 skipped in 3.2s\n"
    assert _gpu_check.pytest_summary(log) == {"summary": "1 failed, 5 passed, 1 skipped in 3.2s",
                                              "failed": ["FAILED tests/kernels/test_vci.py::test_x - AssertionError"]}
    ruled = "==== 7 passed, 2 deselected in 12.01s ====\n"
    assert _gpu_check.pytest_summary(ruled)["summary"] == "7 passed, 2 deselected"


def test_train_step_bench_runs_the_trainers_step_on_the_cpu() -> None:
    import torch

    result = bench_train_step.run("lvg-tiny", 2, "bf16", torch.device("cpu"), steps=1, warmup=0)
    assert result["amp"] == "bf16" and result["kernel_impl"] == "reference"  # bf16 autocast runs on the CPU too
    # fp16 with loss scaling is CUDA-only in the trainer: float32 on the CPU, and the result says so.
    assert bench_train_step.run("lvg-tiny", 2, "fp16", torch.device("cpu"), steps=1, warmup=0)["amp"] == "off"
    assert result["samples_per_s"] > 0 and result["losses_finite"] and len(result["samples_ms"]) == 1
    assert result["peak_allocated_mib"] is None and "matmul_fraction" not in result
    from lvg.config import get_config

    cfg = get_config("lvg-tiny")
    batch = bench_train_step.random_batch(cfg, 3)
    side = cfg.encoder.img_size // 4
    assert batch["target"].shape == (3, side, side) and 0 < float(batch["target"].mean()) < 1
    assert batch["text_mask"][:, 0].all() and batch["image"].std() > 0.5


def test_the_readme_table_has_the_rows_the_summary_fills() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### On a GPU"):readme.index("## The model")]
    rows = [line.split(" | ")[0].lstrip("| ") for line in section.splitlines() if line.startswith("| ")][2:]
    assert rows == list(_gpu_check.README_ROWS)
    assert "OUT=/tmp/gpu_out bash benchmarks/gpu_check.sh" in section
