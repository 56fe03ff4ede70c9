"""What a bigger model costs here: capacity options of a variant against the variant itself.

    python benchmarks/bench_capacity.py [--variant lvg-s-xy-stem] [--option NAME:KEY=VALUE,... ...]
                                        [--runs 30] [--steps 5] [--threads 2] [--rounds 3]
                                        [--out benchmarks/results]

Each option changes the variant's encoder: ``width`` (embedding width; the FFN keeps its ratio to it),
``depth`` (the pixel decoder's pyramid layers move in proportion), ``patch`` and ``size`` (input resolution),
or the probability map's scale: ``map`` (``HeadConfig.map_stride``, 2 for a 1/2-scale map).
Per option, with random weights (the cost does not depend on their values): parameters, the fp32 ONNX file's size,
ONNX Runtime latency at batch 1 in the session ``lvg infer`` opens (median of ``--runs``, after 5 warm-up
runs), and the trainer's own step at batch 12 in bf16 on random batches (``bench_train_step.py``'s; median of
``--steps`` after 2 warm-up steps). Every option is measured in each of ``--rounds`` rounds, in alternating
order; the numbers are medians over rounds, and the ratios to the unchanged variant are medians of each
round's ratios. The bundled model's limits (README) are 30 MB and 100 ms; the table marks the options that
keep both.
Writes ``capacity_<variant>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep, as under the lvg command

HERE = Path(__file__).resolve().parent
DEFAULT_OPTIONS = ("width288:width=288", "depth9:depth=9", "patch16@320:patch=16,size=320",
                   "patch16@384:patch=16,size=384", "patch16@480:patch=16")
LIMIT_MB, LIMIT_MS = 30.0, 100.0


#: What an option may change: the encoder's width and depth, the patch and input size, the map's stride.
OPTION_KEYS = ("width", "depth", "patch", "size", "map")


def parse_option(text: str) -> tuple[str, dict[str, int]]:
    """``"name:key=value,..."`` -> (name, {key: value}); keys: width, depth, patch, size, map."""
    name, _, spec = text.partition(":")
    changes = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key not in OPTION_KEYS or not value.isdigit():
            raise SystemExit(f"error: option {text!r}: expected KEY=INT with KEY in {', '.join(OPTION_KEYS)}")
        changes[key] = int(value)
    if not name or not changes:
        raise SystemExit(f"error: option {text!r}: expected NAME:KEY=INT[,KEY=INT...]")
    return name, changes


def changed_config(cfg: Any, changes: dict[str, int]) -> Any:
    """``cfg`` with the changes applied (a ConfigError names what does not fit)."""
    enc, head, pre = cfg.encoder, cfg.head, cfg.preprocess
    if "width" in changes:
        ffn = changes["width"] * enc.ffn_dim // enc.embed_dim
        enc = dataclasses.replace(enc, embed_dim=changes["width"], ffn_dim=ffn)
    if "depth" in changes:
        # The decoder reads the same relative depths of a deeper or shallower encoder.
        layers = tuple(max(1, round(i * changes["depth"] / enc.depth)) for i in head.pyramid_layers)
        enc, head = dataclasses.replace(enc, depth=changes["depth"]), dataclasses.replace(head, pyramid_layers=layers)
    if "patch" in changes:
        enc = dataclasses.replace(enc, patch_size=changes["patch"])
    if "size" in changes:
        enc, pre = dataclasses.replace(enc, img_size=changes["size"]), dataclasses.replace(pre, size=changes["size"])
    if "map" in changes:
        head = dataclasses.replace(head, map_stride=changes["map"])
    return cfg.replace(encoder=enc, head=head, preprocess=pre)


def measure(cfg: Any, *, runs: int, steps: int, threads: int, batch: int = 12) -> dict[str, float]:
    """Parameters, ONNX size and latency, training-step time of a randomly initialised ``cfg``."""
    import torch
    from bench_train_step import make_trainer, random_batch

    from lvg.core.tokenizer import train_sentencepiece
    from lvg.export.onnx_export import example_inputs, export_onnx
    from lvg.modeling import build_model
    from lvg.runtime.backends.ort_backend import OnnxRuntimeBackend

    torch.manual_seed(0)
    model = build_model(cfg).eval()
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        # Any tokenizer does: the graph's cost does not depend on it.
        spm = train_sentencepiece(["the big red shape left of the small blue star"] * 20, Path(tmp) / "t.spm",
                                  vocab_size=30, seed=0)
        out = Path(tmp) / "m.onnx"
        export_onnx(model, out, tokenizer=spm, check=False)
        size_mb = out.stat().st_size / 1e6
        # The session lvg infer runs (its graph optimisations and thread settings).
        backend = OnnxRuntimeBackend(out, device="cpu", threads=threads)
        arrays = [t.numpy() for t in example_inputs(cfg, 1)]
        for _ in range(5):
            backend.run_arrays(*arrays)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            backend.run_arrays(*arrays)
            times.append((time.perf_counter() - t0) * 1e3)
        # The trainer's own step (its losses, parameter groups, bf16 autocast) on random batches.
        trainer = make_trainer(cfg, batch, "bf16", torch.device("cpu"), Path(tmp) / "run")
        batches = [random_batch(cfg, batch, seed=k) for k in range(2)]
        step_times = []
        for k in range(steps + 2):
            t0 = time.perf_counter()
            trainer.train_step(batches[k % 2])  # reads the loss back: the step has ended
            if k >= 2:
                step_times.append(time.perf_counter() - t0)
            trainer.step += 1
    return {"params_m": params_m, "onnx_mb": size_mb, "ort_ms": statistics.median(times),
            "train_step_s": statistics.median(step_times)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="lvg-s-xy-stem")
    ap.add_argument("--option", action="append", default=None, help="NAME:KEY=INT,... (repeatable)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="rounds over all options, in alternating order")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)

    import torch
    from _results import write_result

    from lvg.config import get_config

    torch.set_num_threads(args.threads)
    base = get_config(args.variant)
    options = [parse_option(o) for o in (args.option or DEFAULT_OPTIONS)]
    configs = [("(variant)", {}, base)] + [(n, ch, changed_config(base, ch)) for n, ch in options]
    # Rounds in alternating order, so neither the first option measured (cold caches, thread pools starting)
    # nor drift on a shared machine lands on one option; ratios are per round, then the median.
    rounds: list[list[dict[str, float]]] = [[] for _ in configs]
    for k in range(args.rounds):
        order = range(len(configs)) if k % 2 == 0 else reversed(range(len(configs)))
        for i in order:
            rounds[i].append(measure(configs[i][2], runs=args.runs, steps=args.steps, threads=args.threads))
    rows = []
    for (name, changes, _), per_round in zip(configs, rounds):
        row: dict[str, Any] = {"option": name, "changes": changes}
        for key in per_round[0]:
            row[key] = statistics.median(m[key] for m in per_round)
        for key, ratio in (("ort_ms", "ort_vs_variant"), ("train_step_s", "step_vs_variant")):
            row[ratio] = statistics.median(m[key] / r[key] for m, r in zip(per_round, rounds[0]))
        row["rounds"] = per_round
        rows.append(row)
    print(f"{args.variant}, {args.threads} threads: ONNX Runtime fp32 at batch 1, training step at batch 12 (bf16)")
    print(f"{'option':<14}{'params M':>9}{'ONNX MB':>9}{'ORT ms':>8}{'x':>6}{'step s':>8}{'x':>6}  fits 30 MB / 100 ms")
    for r in rows:
        r["fits"] = r["onnx_mb"] <= LIMIT_MB and r["ort_ms"] <= LIMIT_MS
        print(f"{r['option']:<14}{r['params_m']:>9.2f}{r['onnx_mb']:>9.1f}{r['ort_ms']:>8.1f}{r['ort_vs_variant']:>6.2f}"
              f"{r['train_step_s']:>8.2f}{r['step_vs_variant']:>6.2f}  {'yes' if r['fits'] else 'no'}")
    result = {"variant": args.variant, "threads": args.threads, "runs": args.runs, "steps": args.steps,
              "rounds": args.rounds,
              "limits": {"onnx_mb": LIMIT_MB, "ort_ms": LIMIT_MS}, "rows": rows}
    write_result(result, args.out, f"capacity_{args.variant}.json")
    return result


if __name__ == "__main__":
    main()
