"""benchmarks/bench_train_cpu.py: the precision x threads table and the data worker's rate, on lvg-tiny."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_train_cpu.py"
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_matmul_probe_counts_two_flops_per_multiply_add() -> None:
    import torch
    from bench_train_cpu import matmul_gflops

    # A rate in a plausible band for any CPU that runs the suite (not a speed target: a units check).
    assert 0.05 < matmul_gflops(torch.float32, m=64, k=64, n=64, reps=3) < 1e5


def test_lvg_tiny_table_and_worker_rate(tmp_path: Path) -> None:
    from lvg.train.synth import generate

    data = generate(tmp_path / "data", images=4, seed=5, size_range=(96, 160), splits=(("train", 1.0),)).out_dir
    proc = subprocess.run([sys.executable, str(BENCH), "--variant", "lvg-tiny", "--batch", "2", "--steps", "1",
                           "--warmup", "1", "--threads", "1", "--data", f"{data}:grefcoco-synth", "--samples", "4",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "train_cpu_lvg-tiny.json").read_text())
    cases = {(c["threads"], c["precision"]) for c in result["cases"]}
    assert cases == {(1, "fp32"), (1, "bf16")}
    assert all(c["samples_per_s"] > 0 and 0 < c["matmul_fraction"] for c in result["cases"])
    assert result["cases"][0]["vs_fp32_1_thread"] == 1.0
    assert result["data_worker_samples_per_s"] > 0
    assert "threads  precision" in proc.stdout
