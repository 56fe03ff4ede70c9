"""benchmarks/bench_vci_saturation.py: a real run on tiny data, and a model whose softmaxes are forced flat
or hard."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_vci_saturation.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from lvg.train.synth import generate

    return generate(tmp_path_factory.mktemp("vci") / "data", images=4, seed=5, size_range=(96, 160),
                    splits=(("val", 1.0),)).out_dir


def _run(tmp_path: Path, data: Path, concept_scale: float) -> dict:
    import torch

    from lvg.modeling import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("lvg-tiny")
    with torch.no_grad():
        for injector in model.concept_injectors:
            injector.concepts.mul_(concept_scale)
    name = f"x{concept_scale:g}"
    ckpt = save_checkpoint(model, tmp_path / name / "last.safetensors")
    proc = subprocess.run([sys.executable, str(BENCH), "--ckpt", str(ckpt), "--data", str(data),
                           "--sentences", "6", "--batch-size", "4", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "attribute max" in proc.stdout and "wrote" in proc.stdout
    result = json.loads((tmp_path / "out" / f"vci_saturation_{name}.json").read_text())
    assert result["sentences"] == 6 and len(result["injectors"]) == len(model.concept_injectors)
    return result["injectors"]


def test_the_softmax_maxima_lie_between_uniform_and_hard(tmp_path: Path, data: Path) -> None:
    for row in _run(tmp_path, data, 1.0).values():
        assert 1.0 <= row["selected"]
        assert 1.0 / row["selected"] - 1e-6 <= row["concept_max"] <= 1.0 + 1e-6
        assert 1.0 / row["attributes"] - 1e-6 <= row["attribute_max"] <= 1.0 + 1e-6
        assert min(row["norm_patches"], row["norm_attributes"], row["norm_concepts_v"]) > 0


def test_larger_concept_tokens_sharpen_the_concept_attention(tmp_path: Path, data: Path) -> None:
    flat, sharp = _run(tmp_path, data, 1e-4), _run(tmp_path, data, 1e4)
    for name in flat:
        # Near-zero logits: a uniform softmax over the selected patches; huge ones: one patch each.
        assert flat[name]["concept_max"] == pytest.approx(1.0 / flat[name]["selected"], rel=0.2)
        assert sharp[name]["concept_max"] > 0.99
