"""benchmarks/bench_e2e.py: a smoke run on lvg-tiny and the report it writes (no timing assertions).

The smoke run starts one worker process per (model, backend), six in all (slow: ~10-30 s of CPU).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_e2e.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_e2e  # noqa: E402
from _plot import line_chart  # noqa: E402


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    out = tmp_path_factory.mktemp("bench_out")
    cache = tmp_path_factory.mktemp("bench_cache")
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--batches", "1,2", "--reps", "2", "--reps-large", "1",
         "--out", str(out), "--cache", str(cache)],
        capture_output=True, text=True, timeout=600, cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "e2e_cpu.json").read_text())
    return result, (out / "e2e_cpu.md").read_text(), out


@pytest.mark.slow
def test_json_has_device_versions_date_and_every_planned_case(quick_run) -> None:
    result, _, _ = quick_run
    assert result["schema"] == "lvg-bench-e2e/1"
    assert result["variant"] == "lvg-tiny"
    assert result["device"]["kind"] == "cpu" and result["device"]["threads"] >= 1
    assert result["versions"]["torch"] and result["versions"]["onnxruntime"]
    assert result["date"][:4].isdigit()
    got = {(r["label"], r["batch"]) for r in result["results"]}
    # --quick = eager + ort; the latent model at every batch, the bare models at the first batch only.
    expected = {(f"lvg/{b}-fp32", n) for b in ("eager", "ort") for n in (1, 2)}
    expected |= {(f"{m}/{b}-fp32", 1) for m in ("nolatent", "encoder") for b in ("eager", "ort")}
    assert got == expected, result["skipped"]


@pytest.mark.slow
def test_statistics_are_consistent_with_the_raw_samples(quick_run) -> None:
    result, _, _ = quick_run
    for r in result["results"]:
        samples = r["samples_ms"]
        assert len(samples) == r["n"] == (2 if r["batch"] == 1 else 1)
        assert r["latency_ms"]["p50"] == pytest.approx(float(np.percentile(samples, 50)), rel=1e-3, abs=1e-3)
        assert r["latency_ms"]["p90"] == pytest.approx(float(np.percentile(samples, 90)), rel=1e-3, abs=1e-3)
        assert r["throughput_sps"] == pytest.approx(r["batch"] * 1000 / r["latency_ms"]["p50"], rel=1e-6)
        # The forward is part of the end-to-end time.
        assert all(m <= t + 1e-6 for m, t in zip(r["samples_model_ms"], samples))
        assert r["peak_rss_mb"] and r["peak_rss_mb"] > 10  # a live process holding a model


@pytest.mark.slow
def test_ratios_are_medians_of_per_round_ratios(quick_run) -> None:
    result, _, _ = quick_run
    rows = {(r["label"], r["batch"]): r for r in result["results"]}
    ratio = next(x for x in result["ratios"] if x["name"] == "lvg / nolatent (eager-fp32)")
    a, b = rows[("lvg/eager-fp32", 1)]["samples_ms"], rows[("nolatent/eager-fp32", 1)]["samples_ms"]
    assert ratio["paired_median"] == pytest.approx(statistics.median([x / y for x, y in zip(a, b)]), rel=1e-3)
    names = {x["name"] for x in result["ratios"]}
    assert {"lvg / encoder-same-tokens (eager-fp32)", "ort-fp32 / eager-fp32 (lvg)"} <= names
    targets = {t["target"]: t for t in result["targets"]}
    assert any(t.startswith("ONNX Runtime fp32 <=") for t in targets)
    for t in result["targets"]:
        assert isinstance(t["met"], bool)


@pytest.mark.slow
def test_model_costs_match_independent_counts(quick_run) -> None:
    import torch

    from lvg.config import get_config
    from lvg.modeling import build_model

    result, _, _ = quick_run
    models = result["models"]
    cfg = get_config("lvg-tiny")
    lat_tokens = sum(k + 2 for k in cfg.latent.lengths)
    grid = cfg.encoder.img_size // cfg.encoder.patch_size
    # The bare encoder sees the latent model's token count: vision (+cls) + text + latent slots.
    assert models["encoder"]["tokens"] == grid * grid + 1 + cfg.preprocess.max_text_len + lat_tokens
    assert models["encoder"]["tokens"] == models["lvg"]["tokens"]
    torch.manual_seed(0)
    model = build_model("lvg-tiny")
    assert models["lvg"]["params_m"] == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)
    assert models["encoder"]["params_m"] == pytest.approx(sum(p.numel() for p in model.beit3.parameters()) / 1e6)
    assert models["encoder"]["gflops"] < models["lvg"]["gflops"]


@pytest.mark.slow
def test_markdown_table_lists_every_result_and_links_the_plot(quick_run) -> None:
    result, md, out = quick_run
    assert md.startswith("# End-to-end benchmark: lvg-tiny on cpu")
    table = [line for line in md.splitlines() if line.startswith("| ") and "/" in line.split("|")[1]]
    for r in result["results"]:
        assert any(line.split("|")[1].strip() == r["label"] and line.split("|")[2].strip() == str(r["batch"])
                   for line in table), r["label"]
    assert "## Targets" in md and "(latency_vs_batch_cpu.png)" in md
    img = Image.open(out / "latency_vs_batch.png")
    assert img.size == (900, 560) and img.format == "PNG"


def test_line_chart_draws_each_series_in_its_colour(tmp_path: Path) -> None:
    from _plot import PALETTE

    path = line_chart({"a": [(1, 10.0), (4, 30.0)], "b": [(1, 5.0), (4, 8.0)]}, tmp_path / "c.png",
                      title="t", xlabel="batch", ylabel="ms")
    rgb = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)  # (H*W, 3)
    pixels = {tuple(int(c) for c in p) for p in np.unique(rgb, axis=0)}
    assert PALETTE[0] in pixels and PALETTE[1] in pixels


def test_plan_skips_what_the_machine_cannot_run() -> None:
    has = {"triton": False, "tensorrt": False, "ort_cuda": False, "compiler": True, "openvino": False}
    cases, skipped = bench_e2e.plan("cpu", list(bench_e2e.ALL_BACKENDS), [1, 4], [1], has)
    labels = {c.label for c in cases}
    assert "lvg/compile-fp32" in labels and "lvg/ort-fp32" in labels
    assert not any(c.device != "cpu" or c.precision != "fp32" for c in cases)
    assert {s["label"] for s in skipped} == {"lvg/ort-fp16 (cpu)", "lvg/ov-*", "lvg/trt-fp16"}
    cases, skipped = bench_e2e.plan("cpu", ["ort", "ov"], [1, 4], [1], {**has, "openvino": True})
    assert {c.label: c.batches for c in cases if c.backend == "ov"} == {"lvg/ov-bf16": (1, 4), "lvg/ov-int8": (1, 4)}
    gpu = {"triton": True, "tensorrt": False, "ort_cuda": False, "compiler": True, "openvino": True}
    cases, _ = bench_e2e.plan("cuda", ["eager", "compile"], [1, 8, 64], [1, 8, 64], gpu)
    labels = {c.label for c in cases}
    assert "lvg/compile-fp16+cudagraphs/vci-triton" in labels and "lvg/eager-fp16/vci-triton" in labels


def test_plan_on_cuda_picks_precisions_models_and_compiled_batches() -> None:
    gpu = {"triton": True, "tensorrt": False, "ort_cuda": False, "compiler": True, "openvino": True}
    cases, skipped = bench_e2e.plan("cuda", ["eager", "compile"], [1, 64, 8], [1, 64, 8], gpu,
                                    precisions=("bf16", "fp16"), models=("lvg",), compile_batches=[1, 64])
    got = {c.label: c.batches for c in cases}
    eager = ["lvg/eager-fp32", "lvg/eager-bf16", "lvg/eager-bf16/vci-triton", "lvg/eager-fp16",
             "lvg/eager-fp16/vci-triton"]
    compiled = ["lvg/compile-bf16", "lvg/compile-bf16+cudagraphs", "lvg/compile-bf16+cudagraphs/vci-triton"]
    assert got == {**{label: (1, 64, 8) for label in eager}, **{label: (1, 64) for label in compiled}}
    assert skipped == []
