"""The analysis and reports of ``bench_e2e.py``: per-case statistics, paired ratios, targets, the markdown
report and the latency plot."""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path
from typing import Any

from _e2e_prepare import HERE, IMAGE_WH, Case, _encoder_text_len, _variant_names

# Targets of issue 7 (ratios measured in one run) and issue 22 (the GPU: a batch-1 latency with compile and
# CUDA graphs, and the batch-64 forward's share of the dense bf16 matmul rate).
TARGET_ORT_VS_EAGER = 0.9
TARGET_LATENT_OVERHEAD = 1.10
PAPER_GFLOPS, PAPER_PARAMS_M = 198.0, 267.0
TARGET_GPU_MATMUL_SHARE = 0.50
TARGET_GPU_B1_MS = 2.5


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in [0, 100]) of a non-empty list."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)



def _model_costs(variant: str) -> dict[str, dict[str, Any]]:
    """Parameters, GFLOPs and token count of the three models (meta device: no weights allocated)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lvg.config import get_config
    from lvg.modeling.cost import count_flops
    from lvg.modeling.encoder import BEiT3

    names = _variant_names(variant)
    out: dict[str, dict[str, Any]] = {}
    for key in ("lvg", "nolatent"):
        r = count_flops(names[key])
        cfg = get_config(names[key])
        out[key] = {
            "name": names[key], "params_m": r.total_params / 1e6, "gflops": r.total_gflops,
            "encoder_gflops": (r.flops["backbone"] + r.flops["latent_expressions"]) / 1e9,
            "tokens": cfg.num_tokens,
        }
    cfg = get_config(names["encoder"])
    length = _encoder_text_len(cfg)
    with torch.device("meta"):
        enc = BEiT3(cfg.encoder).eval().requires_grad_(False)
        s = cfg.encoder.img_size
        args = (torch.empty(1, 3, s, s), torch.zeros(1, length, dtype=torch.long),
                torch.ones(1, length, dtype=torch.bool))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        enc(*args)
    out["encoder"] = {
        "name": f"{names['encoder']} encoder", "params_m": sum(p.numel() for p in enc.parameters()) / 1e6,
        "gflops": counter.get_total_flops() / 1e9, "encoder_gflops": counter.get_total_flops() / 1e9,
        "tokens": cfg.encoder.num_patches + 1 + length,
    }
    return out


def _summarise(case: Case, batch: int, samples: list[dict[str, float]], stats: dict[str, Any],
               cost: dict[str, Any]) -> dict[str, Any]:
    tot = [s["total_ms"] for s in samples]
    mod = [s["model_ms"] for s in samples]
    p50 = _percentile(tot, 50)
    row = {
        "label": case.label, "model": case.model, "model_name": cost["name"], "backend": case.backend,
        "precision": case.precision, "device": case.device, "impl": case.impl, "cuda_graphs": case.cuda_graphs,
        "batch": batch, "n": len(samples),
        "latency_ms": {"p50": p50, "p90": _percentile(tot, 90), "min": min(tot), "mean": statistics.fmean(tot)},
        "model_ms": {"p50": _percentile(mod, 50), "p90": _percentile(mod, 90), "min": min(mod)},
        "pre_ms_p50": _percentile([s["pre_ms"] for s in samples], 50),
        "post_ms_p50": _percentile([s["post_ms"] for s in samples], 50),
        "throughput_sps": batch / (p50 / 1e3),
        "model_tflops": cost["gflops"] * batch / _percentile(mod, 50),  # GFLOP / ms = TFLOP/s
        "peak_rss_mb": stats.get("peak_rss_mb", {}).get(str(batch)),
        "ru_maxrss_mb": stats.get("ru_maxrss_mb"),
        "import_rss_mb": stats.get("import_rss_mb"),
        "load_rss_mb": stats.get("load_rss_mb"),
        "gpu_max_allocated_mb": stats.get("gpu_max_allocated_mb", {}).get(str(batch)),
        "setup_s": stats.get("setup_s", {}),
        "samples_ms": [round(t, 3) for t in tot],
        "samples_model_ms": [round(t, 3) for t in mod],
    }
    device = stats.get("device_ms", {}).get(str(batch))
    probe = stats.get("matmul_tflops")
    if device:
        # The forward on device-resident inputs, CUDA events (no host<->device copies, no host sync).
        row["device_ms"] = device
        row["device_tflops"] = cost["gflops"] * batch / device["p50"]
    if probe:
        row["matmul_tflops"] = probe
        row["matmul_fraction"] = row.get("device_tflops", row["model_tflops"]) / probe
    return row


def _paired_ratio(rows: dict[str, dict], a: str, b: str, batch: int, key: str = "samples_ms") -> dict | None:
    """Median over rounds of a_r / b_r (both measured in round r), plus the ratio of medians."""
    ra, rb = rows.get(f"{a}@{batch}"), rows.get(f"{b}@{batch}")
    if not ra or not rb:
        return None
    pairs = [x / y for x, y in zip(ra[key], rb[key]) if y > 0]
    if not pairs:
        return None
    return {
        "a": a, "b": b, "batch": batch, "metric": "latency" if key == "samples_ms" else "model",
        "paired_median": statistics.median(pairs),
        "ratio_of_p50": _percentile(ra[key], 50) / _percentile(rb[key], 50),
        "rounds": len(pairs),
    }


def analyse(result: dict[str, Any]) -> None:
    """Add ``ratios`` and ``targets`` to ``result`` (in place)."""
    ratios: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    _ratios_and_latent_targets(result, ratios, targets)
    targets += _paper_targets(result["models"])
    if result["device"]["kind"] == "cuda":
        targets += _gpu_targets(result)
    result["ratios"] = ratios
    result["targets"] = targets


def _low_precisions(result: dict[str, Any]) -> list[str]:
    """The half precisions a run measured (the first is the compiled one); fp32 on CPU."""
    if result["device"]["kind"] != "cuda":
        return ["fp32"]
    return list(result["settings"].get("precisions") or ["fp16"])


def _ratios_and_latent_targets(result: dict[str, Any], ratios: list[dict], targets: list[dict]) -> None:
    rows = {f"{r['label']}@{r['batch']}": r for r in result["results"]}
    costs = result["models"]
    device = result["device"]["kind"]
    lowp = _low_precisions(result)[0]
    b1 = min(result["settings"]["batches"])

    def add(name: str, a: str, b: str, batch: int, flop_ratio: float | None = None) -> dict | None:
        r_lat = _paired_ratio(rows, a, b, batch)
        r_mod = _paired_ratio(rows, a, b, batch, key="samples_model_ms")
        if r_lat is None:
            return None
        entry = {"name": name, **r_lat, "model_paired_median": r_mod["paired_median"] if r_mod else None,
                 "flop_ratio": flop_ratio}
        ratios.append(entry)
        return entry

    def latent_target(entry: dict | None, text: str) -> None:
        if entry is not None:
            targets.append({"target": text, "value": entry["paired_median"], "limit": TARGET_LATENT_OVERHEAD,
                            "met": entry["paired_median"] <= TARGET_LATENT_OVERHEAD})

    fr_enc = costs["lvg"]["gflops"] / costs["encoder"]["gflops"]
    fr_nol = costs["lvg"]["gflops"] / costs["nolatent"]["gflops"]
    backends = sorted({(r["backend"], r["precision"], r["cuda_graphs"]) for r in result["results"]})
    for backend, prec, cg in backends:
        lab = f"{backend}-{prec}{'+cudagraphs' if cg else ''}"
        for batch in result["settings"]["batches"]:
            e1 = add(f"lvg / encoder-same-tokens ({lab})", f"lvg/{lab}", f"encoder/{lab}", batch, fr_enc)
            e2 = add(f"lvg / nolatent ({lab})", f"lvg/{lab}", f"nolatent/{lab}", batch, fr_nol)
            if e1 is not None:
                e1["flop_ratio_encoder_part"] = costs["lvg"]["encoder_gflops"] / costs["encoder"]["gflops"]
            if batch == b1 and backend == "eager" and prec == lowp:
                latent_target(e2, f"lvg latency <= {TARGET_LATENT_OVERHEAD}x the bare backbone (nolatent, {lab}, "
                                  f"batch {batch})")
                latent_target(e1, f"lvg latency <= {TARGET_LATENT_OVERHEAD}x the encoder alone with 959-token "
                                  f"input ({lab}, batch {batch}; FLOP ratio {fr_enc:.3f} incl. the pixel decoder)")
    for batch in result["settings"]["batches"]:
        e = add("ort-fp32 / eager-fp32 (lvg)", "lvg/ort-fp32", "lvg/eager-fp32", batch)
        if e is not None and batch == b1 and device == "cpu":
            targets.append({"target": f"ONNX Runtime fp32 <= {TARGET_ORT_VS_EAGER}x torch eager (lvg, batch {batch})",
                            "value": e["paired_median"], "limit": TARGET_ORT_VS_EAGER,
                            "met": e["paired_median"] <= TARGET_ORT_VS_EAGER})
        add("compile / eager (lvg, fp32)", "lvg/compile-fp32", "lvg/eager-fp32", batch)
        if device != "cuda":
            continue
        for p in _low_precisions(result):
            for base in (f"eager-{p}", f"compile-{p}+cudagraphs"):
                e = add(f"vci-triton / vci-reference (lvg, {base})", f"lvg/{base}/vci-triton", f"lvg/{base}", batch)
                if e is not None:
                    targets.append({"target": f"Triton VCI no slower end to end ({base}, batch {batch})",
                                    "value": e["paired_median"], "limit": 1.0, "met": e["paired_median"] <= 1.0})
            add(f"compile+cudagraphs / compile (lvg, {p})", f"lvg/compile-{p}+cudagraphs", f"lvg/compile-{p}", batch)


def _paper_targets(costs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    enc_gf, gf, params = costs["lvg"]["encoder_gflops"], costs["lvg"]["gflops"], costs["lvg"]["params_m"]
    return [
        {"target": f"GFLOPs within 5% of the paper's {PAPER_GFLOPS:g} (encoder + latent modules)",
         "value": enc_gf, "limit": PAPER_GFLOPS, "met": abs(enc_gf / PAPER_GFLOPS - 1) <= 0.05},
        {"target": f"GFLOPs within 5% of the paper's {PAPER_GFLOPS:g} (whole model incl. pixel decoder)",
         "value": gf, "limit": PAPER_GFLOPS, "met": abs(gf / PAPER_GFLOPS - 1) <= 0.05},
        {"target": f"params within 2% of the paper's {PAPER_PARAMS_M:g}M",
         "value": params, "limit": PAPER_PARAMS_M, "met": abs(params / PAPER_PARAMS_M - 1) <= 0.02},
    ]


def _gpu_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 22's GPU targets: batch-1 latency with compile + CUDA graphs, and the share of the matmul rate."""
    targets = []
    big = max(result["settings"]["batches"])
    lvg_rows = [r for r in result["results"] if r["model"] == "lvg" and r["batch"] == big]
    shared = [r for r in lvg_rows if r.get("matmul_fraction")]
    if shared:
        # The forward on device-resident inputs where it was timed (CUDA events), against the bf16 matmul
        # probe run in the same worker process; the CPU-side preprocessing of the batch is a separate,
        # parallelisable stage and would measure PIL, not the GPU.
        best = max(shared, key=lambda r: r["matmul_fraction"])
        rate = best.get("device_tflops", best["model_tflops"])
        targets.append({"target": f"batch-{big} model throughput >= {TARGET_GPU_MATMUL_SHARE:.0%} of the dense bf16 "
                                  f"matmul rate measured in the same process ({rate:.0f} of "
                                  f"{best['matmul_tflops']:.0f} TFLOP/s, {best['label']})",
                        "value": best["matmul_fraction"], "limit": TARGET_GPU_MATMUL_SHARE,
                        "met": best["matmul_fraction"] >= TARGET_GPU_MATMUL_SHARE})
    cg = [r for r in result["results"] if r["model"] == "lvg" and r["batch"] == 1 and r["cuda_graphs"]]
    if cg:
        best = min(cg, key=lambda r: r["model_ms"]["p50"])
        dev = f"; on device {best['device_ms']['p50']:.2f} ms" if best.get("device_ms") else ""
        targets.append({"target": f"batch-1 model latency (numpy in and out) with torch.compile + CUDA graphs "
                                  f"<= {TARGET_GPU_B1_MS} ms ({best['label']}; end to end "
                                  f"{best['latency_ms']['p50']:.1f} ms{dev})",
                        "value": best["model_ms"]["p50"], "limit": TARGET_GPU_B1_MS,
                        "met": best["model_ms"]["p50"] <= TARGET_GPU_B1_MS})
    return targets


# ---------------------------------------------------------------------------------------------- reports


def to_markdown(result: dict[str, Any], notes: str = "") -> str:
    dev = result["device"]
    v = result["versions"]
    lines = [
        f"# End-to-end benchmark: {result['variant']} on {dev['kind']} ({result['date']})",
        "",
        f"Device: {dev['name']} ({dev['threads']} threads used). Versions: "
        + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".",
        "",
        f"Settings: batches {result['settings']['batches']}, {result['settings']['reps']} interleaved rounds "
        f"(batch 1; {result['settings']['reps_large']} for larger batches), {result['settings']['warmup']} warm-up "
        f"run(s) per case, image {IMAGE_WH[0]}x{IMAGE_WH[1]} -> {result['img_size']}x{result['img_size']}. "
        "Latency = preprocess + model + postprocess for B samples; `model` = the forward alone "
        "(numpy in/out). Peak RSS: the worker process's high-water mark while running that batch (weights + "
        "runtime + activations; one process per backend).",
        "",
        "## Models",
        "",
        "| model | config | tokens | params (M) | GFLOPs (total) | GFLOPs (encoder + latent) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, c in result["models"].items():
        lines.append(f"| {key} | {c['name']} | {c['tokens']} | {c['params_m']:.1f} | {c['gflops']:.1f} | "
                     f"{c['encoder_gflops']:.1f} |")
    lines += ["", "## Results", "", *_results_table(result["results"])]
    if result.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{s['label']} ({s['reason']})" for s in result["skipped"]) + "."]
    lines += ["", "## Ratios (median of per-round ratios)", "",
              "| ratio | batch | latency | model only | FLOP ratio |", "| --- | --- | --- | --- | --- |"]
    for r in result["ratios"]:
        fr = f"{r['flop_ratio']:.3f}" if r.get("flop_ratio") else "-"
        mo = f"{r['model_paired_median']:.3f}" if r.get("model_paired_median") else "-"
        lines.append(f"| {r['name']} | {r['batch']} | {r['paired_median']:.3f} | {mo} | {fr} |")
    lines += ["", "## Targets (issues 7 and 22)", "", "| target | value | limit | met |", "| --- | --- | --- | --- |"]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['value']:.3f} | {t['limit']:g} | {'yes' if t['met'] else 'NO'} |")
    if result.get("matmul_tflops"):
        lines += ["", f"Measured dense bf16 matmul rate: {result['matmul_tflops']:.1f} TFLOP/s (8192^3, median over "
                      "the CUDA workers, each probed in its own process)."]
    if notes:
        lines += ["", "## Notes", "", notes.strip()]
    lines += ["", f"Plot: [latency vs batch]({result['plot']})" if result.get("plot") else ""]
    return "\n".join(lines).rstrip() + "\n"


def _results_table(results: list[dict[str, Any]]) -> list[str]:
    """One line per (case, batch); on CUDA two more columns: the forward on device-resident inputs (CUDA
    events) and its rate as a share of the bf16 matmul probe of the same process."""
    gpu_cols = any(r.get("device_ms") for r in results)
    head = ("| case | batch | latency p50 (ms) | p90 (ms) | model p50 (ms) | pre+post (ms) | samples/s | model TFLOP/s "
            "| peak RSS (MiB) | GPU max alloc (MiB) |")
    if gpu_cols:
        head += " device p50 (ms) | share of bf16 matmul |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in sorted(results, key=lambda r: (r["batch"], r["model"], r["label"])):
        gpu = f"{r['gpu_max_allocated_mb']:.0f}" if r["gpu_max_allocated_mb"] else "-"
        rss = f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] else "-"
        line = (f"| {r['label']} | {r['batch']} | {r['latency_ms']['p50']:.1f} | {r['latency_ms']['p90']:.1f} | "
                f"{r['model_ms']['p50']:.1f} | {r['pre_ms_p50'] + r['post_ms_p50']:.1f} | {r['throughput_sps']:.2f} | "
                f"{r['model_tflops']:.3f} | {rss} | {gpu} |")
        if gpu_cols:
            dev = f"{r['device_ms']['p50']:.2f}" if r.get("device_ms") else "-"
            share = f"{r['matmul_fraction']:.1%}" if r.get("matmul_fraction") else "-"
            line += f" {dev} | {share} |"
        lines.append(line)
    return lines


# Measured while fixing issue 7 on the 2-core CPU (interleaved A/B in one process, medians; kept here so the
# generated report says what changed). Printed in CPU reports only.
PERF_HISTORY_CPU = (
    "- **Fixes made from profiling (ORT profiler + torch profiler, lvg-b, batch 1).** (1) The encoder passes "
    "SDPA an additive 0/-inf key bias instead of a boolean mask: identical in torch (SDPA converts a boolean "
    "mask to that bias; bit-equal outputs), but the ONNX export no longer emits Where + IsNaN + Where over "
    "every 12x959x959 score matrix (~0.5 s of a ~4.5 s ORT run). (2) The pixel decoder's folded last "
    "deconvolution is one batched MatMul instead of a 6-D Einsum. (3) ONNX Runtime sessions use one "
    "intra-op thread per physical core, sequential execution, full graph optimisation. ORT lvg-b batch 1 "
    "before -> after, same process, 6 interleaved rounds: 4.946 s -> 4.315 s (x0.883); prob max |diff| "
    "1.2e-7. Torch eager is unchanged by (1)-(2) (SDPA micro-benchmark: 48.1 ms bool vs 47.6 ms float).\n"
    "- **Torch on a shared CPU.** With the default OpenMP wait policy (ACTIVE) a torch process on a machine "
    "where another process holds a core slows down 2x (lvg-b: 10 s vs 4.9 s) to 50x (lvg-tiny: 1.37 s vs "
    "25 ms); the workers run with OMP_WAIT_POLICY=PASSIVE (recorded in the JSON settings).\n"
)


def _notes(result: dict[str, Any]) -> str:
    """The honest reading of the ratios (generated from the numbers)."""
    c = result["models"]
    enc_over = c["lvg"]["encoder_gflops"] / c["encoder"]["gflops"]
    tot_over = c["lvg"]["gflops"] / c["encoder"]["gflops"]
    dec = c["lvg"]["gflops"] - c["lvg"]["encoder_gflops"]
    return (
        f"- **What the latent expressions cost.** `lvg` runs {c['lvg']['encoder_gflops']:.1f} GFLOPs in its "
        f"encoder + latent modules against {c['encoder']['gflops']:.1f} for the bare encoder with the same "
        f"{c['encoder']['tokens']} tokens (x{enc_over:.3f}; the paper's +1.5% is 198 vs 195 GFLOPs, i.e. lvg-b vs "
        f"lvg-b-nolatent). The whole model adds a {dec:.1f}-GFLOP pixel decoder and prediction, so lvg / "
        f"encoder-same-tokens has a FLOP ratio of {tot_over:.3f}: a latency ratio near that is the decoder, "
        "not the latent expressions, and the 1.10 target cannot hold for it while the decoder is counted. The "
        "like-for-like measure of the latent expressions is lvg / nolatent (same decoder, same heads; "
        f"FLOP ratio {c['lvg']['gflops'] / c['nolatent']['gflops']:.3f}).\n"
        "- Ratios are medians of per-round ratios: in each round every case ran once, back to back, so "
        "background load on the machine affects numerator and denominator alike.\n"
        "- Peak RSS includes the Python interpreter and the framework (torch workers import torch; the ONNX "
        "Runtime workers do not), see `import_rss_mb` / `load_rss_mb` in the JSON for the split.\n"
        + (
            "- **ONNX Runtime vs eager on CPU.** The exported graph uses standard ONNX ops only (so TensorRT can "
            "parse it): attention is MatMul -> Add(bias) -> Softmax -> MatMul with every (H, T, T) score matrix "
            "materialised, where torch's CPU SDPA is a fused flash kernel. ORT still wins on the encoder and "
            "more on the pixel decoder's convolutions. Replacing each attention by ONNX Runtime's fused "
            "com.microsoft MultiHeadAttention (a prototype graph rewrite, outputs equal to 1.2e-7) took lvg-b "
            "batch 1 from 1.987 s to 1.933 s (-3%, 5 interleaved rounds) and would make the file unreadable "
            "for TensorRT and other runtimes, so the export stays portable.\n"
            "- **Ratios need an idle machine.** Interleaving protects ratios from slow drift, not from "
            "contention: with two training processes on the 2 cores (load 4.8) the same script measured "
            "ORT / eager at 0.949 (batch 1), on an idle machine 0.78.\n"
            + PERF_HISTORY_CPU
            if result["device"]["kind"] == "cpu" else ""
        )
        + (f"- Load average (1 min) at start / end of the run: {result['settings']['load_avg_at_start'][0]:.1f} / "
           f"{result['device']['load_avg_at_end'][0]:.1f} on {result['device']['logical_cpus']} logical CPUs "
           + "(the benchmark's own threads count in it; well above the thread count means other work ran "
           "beside it and the numbers are suspect)."
           if result["settings"].get("load_avg_at_start") and result["device"].get("load_avg_at_end") else "")
    )


def _plot(result: dict[str, Any], out: Path) -> Path | None:
    try:
        sys.path.insert(0, str(HERE))
        from _plot import line_chart
    except ImportError:  # pragma: no cover - Pillow is a core dependency
        return None
    series: dict[str, list[tuple[float, float]]] = {}
    for r in result["results"]:
        if r["model"] != "lvg":
            continue
        series.setdefault(r["label"], []).append((float(r["batch"]), r["latency_ms"]["p50"]))
    for r in result["results"]:  # bare models only where they ran at several batches
        if r["model"] != "lvg" and len(result["settings"]["batches"]) > 1:
            n = sum(1 for x in result["results"] if x["label"] == r["label"])
            if n > 1:
                series.setdefault(r["label"], []).append((float(r["batch"]), r["latency_ms"]["p50"]))
    dev = result["device"]
    path = out / f"latency_vs_batch_{dev['kind']}.png"
    line_chart(series, path, title=f"{result['variant']} end-to-end latency (p50) vs batch, {dev['name']}",
               xlabel="batch", ylabel="latency (ms)")
    (out / "latency_vs_batch.png").write_bytes(path.read_bytes())
    return path


