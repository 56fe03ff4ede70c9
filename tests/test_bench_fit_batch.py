"""benchmarks/bench_fit_batch.py: the batch IoU by hand, and a real fit of lvg-tiny to one batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_fit_batch.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_fit_batch import batch_iou  # noqa: E402


def test_batch_iou_by_hand() -> None:
    import torch

    target = torch.zeros(2, 4, 4)
    target[0, :2] = 1.0  # 8 pixels
    prob = torch.zeros(2, 4, 4)
    prob[0, :1] = 0.9  # 4 of them predicted: IoU 0.5
    prob[0, 3, 0] = 0.3  # below the threshold: not predicted
    target[1, 3] = 1.0  # sample 1: 4 target pixels, none predicted: IoU 0
    assert batch_iou(prob, target, 0.35) == pytest.approx((0.5 + 0.0) / 2)
    prob[1, 2:] = 0.9  # now 4 of 8 predicted pixels are its target: IoU 0.5
    assert batch_iou(prob, target, 0.35) == pytest.approx((0.5 + 0.5) / 2)
    assert batch_iou(prob, target, 0.95) == 0.0


def test_lvg_tiny_fits_one_batch(tmp_path: Path) -> None:
    from lvg.train.synth import generate

    data = generate(tmp_path / "data", images=6, seed=5, size_range=(96, 160), splits=(("train", 1.0),)).out_dir
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(BENCH), "--data", str(data), "--variant", "lvg-tiny", "--steps", "40",
                           "--every", "20", "--batch-size", "4", "--lr", "3e-3", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "fit_batch_lvg-tiny-scratch.json").read_text())
    curve = result["curve"]
    assert [r["step"] for r in curve] == [0, 20, 40] and len(result["sentences"]) == 4
    # From random weights to a fitted batch: the loss falls and the masks come to cover their targets.
    assert curve[-1]["dice_loss"] < curve[0]["dice_loss"] - 0.3
    assert curve[-1]["IoU"] > max(0.5, curve[0]["IoU"] + 0.3)
    assert "Dice loss" in proc.stdout and "wrote" in proc.stdout

    few = subprocess.run([sys.executable, str(BENCH), "--data", str(data), "--variant", "lvg-tiny",
                          "--batch-size", "999", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert few.returncode != 0 and "fewer than --batch-size 999" in few.stderr
