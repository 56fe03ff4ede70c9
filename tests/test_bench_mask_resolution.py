"""benchmarks/bench_mask_resolution.py: a real run on tiny synthetic data; a map passed through its own size is
scored exactly as the map itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_mask_resolution.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=300,
                          cwd=str(ROOT))


def test_run_on_a_tiny_synthetic_dataset(tmp_path: Path) -> None:
    import torch

    from lvg.modeling import build_model, save_checkpoint
    from lvg.train.synth import generate

    data = generate(tmp_path / "data", images=6, seed=5, size_range=(96, 160), splits=(("val", 1.0),)).out_dir
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("lvg-tiny"), tmp_path / "run" / "last.safetensors")
    # 120 is lvg-tiny's own map side: reduced to itself and back, nothing may change.
    proc = _run("--ckpt", str(ckpt), "--data", str(data), "--sides", "120,30", "--max-sentences", "12",
                "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "mask_resolution_run.json").read_text())
    assert result["map_side"] == 120 and list(result["sides"]) == ["model", "120", "30"]
    plain, own, coarse = (result["sides"][k] for k in ("model", "120", "30"))
    assert plain["n"] == own["n"] == coarse["n"] == 12
    assert own == plain and 0.0 < plain["mIoU"] <= 1.0
    assert 0.0 <= coarse["mIoU"] <= 1.0
    assert "map side" in proc.stdout and "wrote" in proc.stdout


def test_bad_sides_are_one_line_errors(tmp_path: Path) -> None:
    proc = _run("--ckpt", str(tmp_path / "none.safetensors"), "--data", str(tmp_path), "--sides", "80,x")
    assert proc.returncode != 0 and proc.stderr.strip().splitlines() == ["error: --sides '80,x': expected "
                                                                         "comma-separated integers"]
