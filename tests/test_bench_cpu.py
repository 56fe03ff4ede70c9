"""benchmarks/bench_cpu.py on the bundled model: ONNX Runtime fp32 against the int8 file lvg export --int8
writes, in one run, with the ratios and roofline fractions its table reports."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_cpu.py"


def test_bundled_fp32_against_int8(tmp_path: Path) -> None:
    cases = ["ort-fp32", "ort-int8"] + (["ov-int8"] if importlib.util.find_spec("openvino") else [])
    proc = subprocess.run([sys.executable, str(BENCH), "--models", "bundled", "--batches", "1", "--reps", "2",
                           "--cases", ",".join(cases), "--threads", "1", "--cache", str(tmp_path / "cache"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "cpu_bundled.json").read_text())
    rows = {r["case"]: r for r in result["results"]}
    assert sorted(rows) == sorted(cases)
    ref = rows["ort-fp32"]
    assert ref["speedup_vs_ort_fp32"] == 1.0 and ref["max_abs_prob_diff"] == 0.0
    probes = result["matmul_gflops_per_s"]
    for name, row in rows.items():
        precision = name.split("-")[1]
        assert row["matmul_precision"] == precision and len(row["times_s"]) == 2
        assert row["gflops_per_s"] == pytest.approx(result["gflops_per_sample"] / row["latency_s"], rel=0.01)
        if probes[precision]:
            assert row["of_matmul"] == pytest.approx(row["gflops_per_s"] / max(probes[precision].values()), abs=2e-3)
        else:
            assert row["of_matmul"] is None
    for name in cases[1:]:  # int8: really different numbers, the same masks on real scenes
        assert 0 < rows[name]["max_abs_prob_diff"] < 0.5 and rows[name]["mask_agreement"] >= 0.995
    assert (tmp_path / "cache" / "cpu-bundled.int8.onnx").is_file()
