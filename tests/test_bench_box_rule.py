"""benchmarks/bench_box_rule.py: the rules on made-up maps, its rule in use against `lvg infer`'s, and a real run
beside `lvg eval --task rec` on the same sentences."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_box_rule.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_box_rule import RULES  # noqa: E402

from lvg.core.postprocess import postprocess  # noqa: E402
from lvg.core.preprocess import letterbox_geometry  # noqa: E402
from lvg.core.regions import find_regions  # noqa: E402


def test_each_rule_picks_its_region() -> None:
    prob = np.zeros((40, 40), np.float32)
    prob[0:20, 0:20] = 0.5  # 400 px, faint: the largest, and the most probability (200)
    prob[30:35, 30:35] = 0.9  # 25 px, confident: the peak and the highest mean
    prob[30:38, 0:8] = 0.6  # 64 px
    prob[31, 3] = 0.95  # one brighter pixel inside the 64 px region: the peak moves there, the mean stays lower
    regions = find_regions(prob > 0.35, prob)
    boxes = {name: rule(regions).box for name, rule in RULES.items()}
    assert boxes == {"peak": (0, 30, 8, 38), "largest": (0, 0, 20, 20), "mean": (30, 30, 35, 35),
                     "mass": (0, 0, 20, 20)}


def test_the_peak_rule_is_the_one_lvg_answers_with() -> None:
    rng = np.random.default_rng(0)
    lb = letterbox_geometry(48, 48, 48)
    several = 0
    for _ in range(60):
        prob = np.zeros((48, 48), np.float32)
        for _ in range(rng.integers(1, 5)):  # a few blobs of random size and confidence
            y, x, h, w = rng.integers(0, 40, 2).tolist() + rng.integers(2, 12, 2).tolist()
            prob[y:y + h, x:x + w] = rng.uniform(0.4, 1.0)
        pred = postprocess(prob, lb)
        regions = find_regions(pred.mask, pred.prob)
        several += len(regions) > 1
        assert RULES["peak"](regions).box == pred.box
    assert several > 20


def test_a_real_run_scores_the_sentences_lvg_eval_scores(tmp_path: Path) -> None:
    import torch

    from lvg.modeling import build_model, save_checkpoint
    from lvg.train.synth import generate

    data = generate(tmp_path / "data", images=6, seed=5, size_range=(96, 160), splits=(("val", 1.0),)).out_dir
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("lvg-tiny"), tmp_path / "tiny" / "last.safetensors")
    proc = subprocess.run([sys.executable, str(BENCH), "--ckpt", str(ckpt), "--data", str(data), "--sentences", "0",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "box_rule_tiny.json").read_text())
    assert set(result["acc@0.5"]) == set(RULES) and 0 < result["sentences"]
    ev = subprocess.run([sys.executable, "-m", "lvg.cli", "eval", "--ckpt", str(ckpt), "--data",
                         f"{data}:refcoco-synth", "--task", "rec", "--precision", "fp32", "--json"],
                        capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert ev.returncode == 0, ev.stderr[-2000:]
    scored = json.loads(ev.stdout)
    assert scored["n"] == result["sentences"]
    assert scored["acc@0.5"] == result["acc@0.5"]["peak"]
