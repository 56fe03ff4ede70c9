"""benchmarks/bench_position_probe.py: the probe on made-up features, and a real run on tiny data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_position_probe.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_position_probe import DIRECTION_SWAPS, cycle_swaps, grid_targets, probe_r2, swap_word  # noqa: E402


def test_probe_reads_position_only_where_the_features_hold_it() -> None:
    rng = np.random.default_rng(0)
    x, y = grid_targets(20, 8)  # 20 maps of 8 x 8 cells
    assert x.shape == y.shape == (1280,) and x[:8].tolist() == sorted(x[:8]) and y[0] == y[7] < y[8]
    noise = rng.normal(size=(len(x), 6))
    mixed = np.c_[noise, 3 * x - y, x + 2 * y]  # x and y are linear in two of the eight features
    assert probe_r2(mixed, x) > 0.99 and probe_r2(mixed, y) > 0.99
    assert probe_r2(noise, x) < 0.05  # nothing to read


def test_swap_word_changes_one_word() -> None:
    assert swap_word("the leftmost green star", DIRECTION_SWAPS) == "the rightmost green star"
    assert swap_word("the star left of the circle on the right", DIRECTION_SWAPS) == (
        "the star right of the circle on the right")  # the first direction only
    assert swap_word("the green star", DIRECTION_SWAPS) is None
    shapes = cycle_swaps(["circle", "square", "star"])
    assert shapes == {"circle": "square", "square": "star", "star": "circle"}
    assert swap_word("the green star left of the circle", shapes) == "the green circle left of the circle"


def test_run_on_a_tiny_synthetic_dataset(tmp_path: Path) -> None:
    import torch

    from lvg.modeling import build_model, save_checkpoint
    from lvg.train.synth import generate

    data = generate(tmp_path / "data", images=6, seed=5, size_range=(96, 160), splits=(("val", 1.0),)).out_dir
    torch.manual_seed(0)
    model = build_model("lvg-tiny-xy")
    with torch.no_grad():
        model.pixel_decoder.positions.weight.normal_(std=3.0)  # a model whose F^V holds where it is
    ckpt = save_checkpoint(model, tmp_path / "xy" / "last.safetensors")
    proc = subprocess.run([sys.executable, str(BENCH), "--ckpt", str(ckpt), "--data", str(data),
                           "--sentences", "8", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    probes = json.loads((tmp_path / "out" / "position_probe_xy.json").read_text())["probes"]
    assert len(probes) == len(model.cfg.head.pyramid_layers) + 1
    fv = probes["F^V (1/8 scale)"]
    assert fv["side"] == 60 and fv["dims"] == model.cfg.head.neck_dim
    assert fv["r2_x"] > 0.9 and fv["r2_y"] > 0.9
    similarity = json.loads((tmp_path / "out" / "position_probe_xy.json").read_text())["embedding_similarity"]
    assert set(similarity) == {"direction", "colour", "shape", "texture"}
    assert 1 <= similarity["colour"]["sentences"] <= 8 and -1.0 <= similarity["colour"]["cosine"] <= 1.0 + 1e-6
    assert "F^V" in proc.stdout and "cos(e, e_swapped)" in proc.stdout and "wrote" in proc.stdout
