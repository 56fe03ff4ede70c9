"""benchmarks/bench_capacity.py: options parsed and applied as documented, and a real run on a tiny variant."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_capacity import changed_config, main, parse_option  # noqa: E402

from lvg.config import get_config  # noqa: E402
from lvg.errors import ConfigError  # noqa: E402


def test_options_change_only_what_they_name() -> None:
    assert parse_option("p16:patch=16,size=320") == ("p16", {"patch": 16, "size": 320})
    for bad in ("p16", "p16:", "p16:patch=x", "p16:heads=4", ":patch=16"):
        with pytest.raises(SystemExit, match="error: option"):
            parse_option(bad)
    base = get_config("lvg-s-xy-stem")  # depth 6, pyramid (2, 4, 5, 6), width 192, FFN 768
    deep = changed_config(base, {"depth": 9})
    assert deep.encoder.depth == 9 and deep.head.pyramid_layers == (3, 6, 8, 9)
    wide = changed_config(base, {"width": 288})
    assert (wide.encoder.embed_dim, wide.encoder.ffn_dim) == (288, 1152)
    small = changed_config(base, {"patch": 16, "size": 320})
    assert (small.encoder.patch_size, small.encoder.img_size, small.preprocess.size) == (16, 320, 320)
    assert small.head == base.head and small.latent == base.latent
    fine = changed_config(base, {"map": 2})
    assert fine.head.map_stride == 2 and fine.prob_size == 240 and fine.encoder == base.encoder
    with pytest.raises(ConfigError, match="divisible"):
        changed_config(base, {"width": 200})  # not a multiple of the heads: said at once, before any work


def test_real_run_on_a_tiny_variant(tmp_path: Path) -> None:
    result = main(["--variant", "lvg-tiny-xy-stem", "--option", "wide:width=128", "--option", "deep:depth=6",
                   "--runs", "2", "--steps", "1", "--threads", "1", "--rounds", "2", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "capacity_lvg-tiny-xy-stem.json").read_text())
    assert [r["option"] for r in saved["rows"]] == ["(variant)", "wide", "deep"]
    base, wide, deep = saved["rows"]
    assert base["ort_vs_variant"] == 1.0 and base["step_vs_variant"] == 1.0
    for r in saved["rows"]:
        # A real fp32 export: four bytes per parameter, plus the graph and the tokenizer.
        assert 4 * r["params_m"] <= r["onnx_mb"] < 4 * r["params_m"] + 1.0
        assert len(r["rounds"]) == 2
        # Medians over rounds; a ratio is the median of each round's ratio to the variant.
        assert r["ort_ms"] == pytest.approx(sum(m["ort_ms"] for m in r["rounds"]) / 2)
        per_round = [m["train_step_s"] / b["train_step_s"] for m, b in zip(r["rounds"], base["rounds"])]
        assert r["step_vs_variant"] == pytest.approx(sum(per_round) / 2)
        assert r["fits"] == (r["onnx_mb"] <= 30 and r["ort_ms"] <= 100)
    assert wide["params_m"] > 2 * base["params_m"] and deep["params_m"] > base["params_m"]
    assert result["rows"][1]["changes"] == {"width": 128}
