"""benchmarks/bench_patch_probe.py: the probe on made-up features, and a real run on tiny data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_patch_probe.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_patch_probe import probe_accuracy  # noqa: E402


def test_probe_reads_a_label_only_where_the_features_hold_it() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=2000)
    noise = rng.normal(size=(2000, 8))
    held = np.c_[noise, np.eye(4)[labels] * 2.0 + 0.3 * rng.normal(size=(2000, 4))]  # one-hot, noisy
    accuracy, majority = probe_accuracy(held, labels, 4)
    assert accuracy > 0.95 and 0.2 < majority < 0.35
    blind, _ = probe_accuracy(noise, labels, 4)
    assert blind < majority + 0.05  # nothing to read: no better than always answering the commonest label


def test_run_on_a_tiny_synthetic_dataset(tmp_path: Path) -> None:
    import torch

    from lvg.modeling import build_model, save_checkpoint
    from lvg.train.synth import generate

    data = generate(tmp_path / "data", images=6, seed=5, size_range=(96, 160), splits=(("val", 1.0),)).out_dir
    torch.manual_seed(0)
    model = build_model("lvg-tiny-xy-stem-relpos")  # F^V with the image stem, as the bundled model's
    ckpt = save_checkpoint(model, tmp_path / "tiny" / "last.safetensors")
    proc = subprocess.run([sys.executable, str(BENCH), "--ckpt", str(ckpt), "--data", str(data),
                           "--images", "6", "--batch-size", "4", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "patch_probe_tiny.json").read_text())
    assert result["images"] == 6 and result["patches"] == 6 * model.cfg.encoder.num_patches
    assert 0 < result["patches_on_objects"] < result["patches"]
    probes = result["probes"]
    assert len(probes) == len(model.cfg.head.pyramid_layers) + 3 and probes["pixels (8x8 per patch)"]["dims"] == 192
    assert probes["F^V (1/8 scale, per patch)"]["dims"] == model.cfg.head.neck_dim
    assert probes["F^V (map scale, per patch)"]["dims"] == model.cfg.head.embed_dim
    for name, row in probes.items():
        if name.startswith("encoder"):
            assert row["dims"] == model.cfg.encoder.embed_dim
        assert set(row) == {"dims", "shape", "colour", "size", "texture", "object"}
        assert all(0.0 <= row[k]["accuracy"] <= 1.0 and 0.0 < row[k]["majority"] <= 1.0 for k in row if k != "dims")
    assert "colour" in proc.stdout and "wrote" in proc.stdout
    assert result["trained_shape_classifier"] is None  # a checkpoint without the shape loss's classifier


@pytest.mark.parametrize(("variant", "source"), [("lvg-tiny", "tokens"),
                                                     ("lvg-tiny-xy-stem-relpos-branch", "branch"),
                                                     ("lvg-tiny-xy-stem-relpos-branch-tokens-ctx-match", "branch")])
def test_a_run_with_the_patch_shape_loss_has_its_classifier_scored(tmp_path: Path, variant: str, source: str) -> None:
    from lvg.modeling import build_model
    from lvg.train.config import TrainConfig
    from lvg.train.synth import generate
    from lvg.train.trainer import train

    data = generate(tmp_path / "data", images=8, seed=5, size_range=(96, 160),
                    splits=(("train", 0.5), ("val", 0.5))).out_dir
    cfg = TrainConfig(variant=variant, data=str(data), steps=2, batch_size=4, val_split=None, lr=1e-3,
                      warmup_steps=1, save_every=0, seed=3, loss_patch_shape=1.0, patch_shape_from=source)
    run = train(cfg, tmp_path / "run", show_progress=False)
    proc = subprocess.run([sys.executable, str(BENCH), "--ckpt", str(run.checkpoint), "--data", str(data),
                           "--images", "4", "--batch-size", "4", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "patch_probe_run.json").read_text())
    trained = result["trained_shape_classifier"]
    assert trained["features"] == source and 0.0 <= trained["accuracy"] <= 1.0 and 0.0 < trained["majority"] <= 1.0
    by_size = [trained["accuracy_small"], trained["accuracy_large"]]
    assert any(v is not None for v in by_size) and all(v is None or 0.0 <= v <= 1.0 for v in by_size)
    assert "the run's own shape classifier" in proc.stdout
    # A model with a shape branch has its grid features probed too, at their width.
    branch = result["probes"].get("shape branch (patch grid)")
    assert (branch is None) == (source == "tokens")
    if branch is not None:
        assert branch["dims"] == build_model(variant).shape_branch.channels
