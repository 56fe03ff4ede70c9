"""The soak benchmark's short version: 300 requests in a fresh process must not grow resident memory.

Runs ``benchmarks/bench_soak.py`` as a real subprocess (so pytest's own allocations do not blur the
measurement) on the micro model, with bad requests mixed in; the full 2,000-request run on lvg-tiny is
``python benchmarks/bench_soak.py`` (results in benchmarks/results/soak_cpu.json).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.micro_model import Micro

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_soak.py"



_PROBE = """
import importlib.util, mmap, sys
spec = importlib.util.spec_from_file_location("bench_soak", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
before = module.rss_bytes()
# Anonymous mmap pages come straight from the kernel, so touching them must raise RSS; heap memory
# (bytearray) can be recycled from pages the process already holds and would show nothing.
block = mmap.mmap(-1, 64 * 2**20)
for offset in range(0, len(block), mmap.PAGESIZE):
    block[offset] = 1
print(module.rss_bytes() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="RSS is read from Linux /proc")
def test_rss_probe_sees_an_allocation() -> None:
    # The measurement itself must be able to fail: 64 MiB touched shows up in the RSS reading. It runs in a
    # fresh process because pytest's own threads and freed heap would blur a 64 MiB step.
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) > 48 * 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="RSS is read from Linux /proc")
def test_soak_300_requests_memory_flat(micro: Micro, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(micro.onnx), "--requests", "300", "--warmup", "100",
         "--sample-every", "50", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["passed"] and report["rss_growth_pct"] < 5.0
    # Every 10th request was bad and gave InputError; everything else a valid result; nothing else.
    assert report["counts"] == {"ok": 360, "input_errors": 40, "unexpected": 0}
    # No Python-level accumulation: the count of live gc-tracked objects is flat after the warm-up
    # (a leak of one object per request would add 300).
    assert abs(report["gc_objects_end"] - report["gc_objects_after_warmup"]) < 100
    assert len(report["samples"]) == 7 and report["rss_max_mib"] < report["rss_after_warmup_mib"] * 1.05
