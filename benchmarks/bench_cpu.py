"""CPU inference per engine and precision, against ONNX Runtime fp32 and this machine's matmul rate, in one run.

    python benchmarks/bench_cpu.py [--models lvg-b,bundled] [--batches 1,8] [--reps 3] [--reps-large 2]
                                   [--cases ort-fp32,ov-bf16,ov-int8,ort-int8,torch-fp32,torch-bf16] [--out DIR]

Models: ``lvg-b`` with random weights (seed 0; exported once into ``benchmarks/.cache``) and ``bundled``
(lvg-s, ``lvg/assets/default/model.onnx``; no checkpoint, so no torch cases). Cases, all in this one process
with the same thread count (one per physical core) and interleaved rounds (round r runs every case once, in
an order reversed on alternate rounds, so other load on the machine hits every case alike):

- ``ort-fp32``: the runtime's ONNX Runtime backend (today's CPU default), the reference of every ratio;
- ``ov-bf16``: the runtime's OpenVINO backend at bf16 (``precision="bf16"``), the same ``.onnx`` file;
- ``ov-int8`` / ``ort-int8``: the int8 file ``lvg export --int8`` writes (:mod:`lvg.export.int8`, calibrated
  on 64 sentences of real ``lvg data synth`` scenes), run by the runtime's OpenVINO backend (its floating-point
  parts at bf16 on a bf16 CPU) and by ONNX Runtime;
- ``torch-fp32`` / ``torch-bf16``: the runtime's torch backend at fp32 and with bf16 weights.

Per case and batch: median latency, images/s, achieved GFLOP/s, the speed-up over ``ort-fp32`` (median of the
per-round ratios), and the achieved rate as a fraction of the matmul probe at the case's precision (numpy and
torch fp32, OpenVINO and torch bf16, OpenVINO int8; 1024 x 768 x 3072, best of 5, measured before and after
the cases: the higher one counts). Accuracy per case: max |prob - prob_fp32| and the share of pixels whose mask
(prob > 0.35) agrees with ``ort-fp32`` (real synth scenes for the bundled model, random inputs for lvg-b).
Writes ``cpu_<model>.json`` (with ``/proc/loadavg`` before and after) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _e2e_prepare import calibration_data, int8_file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
BUNDLED = ROOT / "lvg" / "assets" / "default" / "model.onnx"
ALL_CASES = ("ort-fp32", "ov-bf16", "ov-int8", "ort-int8", "torch-fp32", "torch-bf16")


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "n/a"


def _samples(path: Path, calib: Path, n: int, seed: int = 1) -> dict[str, np.ndarray]:
    """``n`` real synth scenes and single-target sentences (never no-target ones, whose maps are empty) of the
    validation split (the int8 files are calibrated on the training split), preprocessed for the model at
    ``path``, as one batch."""
    from lvg.core.model_file import ModelFile
    from lvg.train.calibration import calibration_sets

    picked, _, _ = calibration_sets(f"{calib}:refcoco-synth", ModelFile.open(path), samples=n, check_samples=1,
                                    seed=seed, split="val")
    items = list(picked)
    return {k: np.concatenate([item[k] for item in items]) for k in items[0]}  # n x (1, ...) -> (n, ...)


def _random(cfg, n: int) -> dict[str, np.ndarray]:
    """The export check's deterministic inputs (random images, texts of varied lengths) as numpy."""
    from lvg.export.onnx_export import example_inputs

    image, ids, mask = example_inputs(cfg, n)
    return {"image": image.numpy(), "text_ids": ids.numpy(), "text_mask": mask.numpy()}


def _lvgb_files(cache: Path) -> tuple[Path, Path]:
    """lvg-b with random weights (seed 0) as a checkpoint and its fp32 export, made once."""
    import torch

    from lvg.core.tokenizer import train_sentencepiece
    from lvg.export import export_onnx
    from lvg.modeling import build_model, save_checkpoint

    ckpt, onnx_path = cache / "cpu-lvg-b.safetensors", cache / "cpu-lvg-b.onnx"
    if not (ckpt.is_file() and onnx_path.is_file()):
        spm = train_sentencepiece(["the red car on the left", "a dog", "the big blue shape"] * 40,
                                  cache / "cpu-lvg-b.spm", vocab_size=60, seed=0)
        torch.manual_seed(0)
        model = build_model("lvg-b", impl="reference").eval()
        from lvg.core.artifact import tokenizer_metadata
        from lvg.core.tokenizer import Tokenizer

        tok = Tokenizer.from_file(spm)
        save_checkpoint(model, ckpt, metadata=tokenizer_metadata(tok.model_bytes, tok.identity))
        export_onnx(ckpt, onnx_path, check=False)
    return ckpt, onnx_path


def open_cases(model: str, cases: list[str], cache: Path, calib: Path) -> dict[str, Any]:
    from lvg.runtime.backends import open_backend

    if model == "bundled":
        onnx_path, ckpt = BUNDLED, None
    else:
        ckpt, onnx_path = _lvgb_files(cache)
    out: dict[str, Any] = {}
    for case in cases:
        t0 = time.perf_counter()
        if case == "ort-fp32":
            out[case] = open_backend(onnx_path, device="cpu", precision="fp32")
        elif case == "ov-bf16":
            out[case] = open_backend(onnx_path, precision="bf16")
        elif case in ("ov-int8", "ort-int8"):
            q = int8_file(onnx_path, cache / f"cpu-{model}.int8.onnx", calib)
            out[case] = open_backend(q, backend="openvino" if case == "ov-int8" else "onnxruntime")
        elif ckpt is not None:
            out[case] = open_backend(ckpt, device="cpu", precision=case.split("-")[1])
        else:
            continue
        print(f"[bench_cpu] {model} {case}: loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def probes() -> dict[str, dict[str, float]]:
    """The matmul ceilings: numpy / torch fp32, OpenVINO / torch bf16, OpenVINO int8 (GFLOP/s)."""
    import torch

    from lvg.runtime.roofline import matmul_rate

    out: dict[str, dict[str, float]] = {"fp32": {"numpy": matmul_rate("fp32").gflops_per_s}, "bf16": {}, "int8": {}}
    for precision in ("bf16", "int8"):
        ov = matmul_rate(precision)
        if ov is not None:
            out[precision]["openvino"] = ov.gflops_per_s
    from bench_train_cpu import matmul_gflops  # the training benchmark's torch probe, same shape

    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        out[precision]["torch"] = matmul_gflops(dtype, reps=5)
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(backends: dict[str, Any], feeds: dict[str, np.ndarray], reps: int) -> dict[str, Any]:
    """Warm-up, accuracy against ort-fp32, then ``reps`` interleaved rounds."""
    args = (feeds["image"], feeds["text_ids"], feeds["text_mask"])
    names = list(backends)
    outs = {n: backends[n].run_arrays(*args).prob for n in names}  # also the warm-up
    ref = outs["ort-fp32"]
    rows: dict[str, Any] = {n: {"times": [], "max_abs_prob_diff": float(np.abs(outs[n] - ref).max()),
                                "mask_agreement": float(((outs[n] > 0.35) == (ref > 0.35)).mean())} for n in names}
    for r in range(reps):
        for n in names if r % 2 == 0 else names[::-1]:
            rows[n]["times"].append(_timed(lambda n=n: backends[n].run_arrays(*args)))
    return rows


def summarise(rows: dict[str, Any], batch: int, gflops: float, ceil: dict[str, dict[str, float]]) -> list[dict]:
    ref = rows["ort-fp32"]["times"]
    table = []
    for name, row in rows.items():
        t = statistics.median(row["times"])
        precision = name.rsplit("-", 1)[1]
        achieved = gflops * batch / t
        best_ceiling = max(ceil[precision].values(), default=None)  # None: no engine here runs the probe
        table.append({
            "case": name, "batch": batch, "latency_s": round(t, 4), "images_per_s": round(batch / t, 3),
            "gflops_per_s": round(achieved, 1),
            "speedup_vs_ort_fp32": round(statistics.median(a / b for a, b in zip(ref, row["times"])), 3),
            "of_matmul": None if best_ceiling is None else round(achieved / best_ceiling, 3),
            "matmul_precision": precision,
            "max_abs_prob_diff": round(row["max_abs_prob_diff"], 6), "mask_agreement": round(row["mask_agreement"], 5),
            "times_s": [round(x, 4) for x in row["times"]],
        })
    return table


def _print(model: str, table: list[dict]) -> None:
    print(f"\n{model}: {'case':>11} {'batch':>5} {'latency s':>10} {'img/s':>7} {'GFLOP/s':>8} {'vs ORT':>7} "
          f"{'of matmul':>9} {'max|dp|':>9} {'masks':>7}")
    for r in table:
        print(f"{'':{len(model) + 1}} {r['case']:>11} {r['batch']:>5} {r['latency_s']:>10.3f} "
              f"{r['images_per_s']:>7.2f} {r['gflops_per_s']:>8.1f} {r['speedup_vs_ort_fp32']:>7.2f} "
              f"{'n/a' if r['of_matmul'] is None else format(r['of_matmul'], '.2f'):>9} "
              f"{r['max_abs_prob_diff']:>9.2g} {r['mask_agreement']:>7.4f}")


def run_model(model: str, args: argparse.Namespace, calib: Path) -> dict[str, Any]:
    import torch

    from lvg import __version__

    torch.set_num_threads(args.threads)
    backends = open_cases(model, args.cases, args.cache, calib)
    cfg = backends["ort-fp32"].info.config
    gflops = backends["ort-fp32"].info.gflops_per_sample
    result: dict[str, Any] = {"model": model, "variant": cfg.name, "gflops_per_sample": gflops,
                              "threads": args.threads, "loadavg_before": _loadavg(), "latent_vg": __version__}
    first = probes()
    table = []
    for batch in args.batches:
        n = batch
        feeds = _samples(backends["ort-fp32"].info.path, calib, n) if model == "bundled" else _random(cfg, n)
        reps = args.reps if batch == 1 else args.reps_large
        rows = measure(backends, feeds, reps)
        last = probes()
        ceil = {p: {k: max(first[p].get(k, 0), last[p].get(k, 0)) for k in first[p] | last[p]} for p in first}
        table += summarise(rows, batch, gflops, ceil)
        result.update({"matmul_gflops_per_s": ceil, "results": table, "loadavg_after": _loadavg()})
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"cpu_{model}.json").write_text(json.dumps(result, indent=2) + "\n")
    _print(model, table)
    print(f"matmul GFLOP/s: {json.dumps({p: {k: round(v) for k, v in d.items()} for p, d in ceil.items()})}; "
          f"load {result['loadavg_before']} -> {result['loadavg_after']}")
    for b in backends.values():
        b.close()
    return result


def main(argv: list[str] | None = None) -> int:
    from lvg.runtime.backends.ort_backend import physical_cores

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="bundled,lvg-b")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--reps", type=int, default=3, help="Rounds at batch 1.")
    p.add_argument("--reps-large", type=int, default=2, help="Rounds at larger batches.")
    p.add_argument("--cases", default=",".join(ALL_CASES))
    p.add_argument("--threads", type=int, default=physical_cores())
    p.add_argument("--cache", type=Path, default=HERE / ".cache")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.cases = [c for c in args.cases.split(",") if c]
    unknown = set(args.cases) - set(ALL_CASES)
    if unknown or "ort-fp32" not in args.cases:
        p.error(f"--cases must include ort-fp32 and name only {', '.join(ALL_CASES)}")
    args.cache.mkdir(parents=True, exist_ok=True)
    calib = calibration_data(args.cache)
    for model in args.models.split(","):
        run_model(model, args, calib)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
