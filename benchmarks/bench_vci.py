"""Visual concept injection: Triton kernels vs the PyTorch reference (eager and torch.compiled).

    python benchmarks/bench_vci.py [--batches 1 8 64] [--dtype fp16] [--quick] [--no-compile] [--tune] [--name NAME]

One VCI call per measurement at the paper's sizes: 900 patches, width 768, 100 concepts, 14 attribute
tokens (one encoder layer; the model makes 12). For each batch and implementation it reports the median
time, the effective bandwidth (bytes of ``V`` read once / time), that bandwidth as a share of a measured
device copy, the time over the bandwidth floor (``V`` bytes / copy bandwidth) and the peak memory above
the inputs (CUDA only). Targets at batch 64 (CUDA): Triton >= 3x faster than the eager reference and within
2x of the floor. Without CUDA only the reference runs (``--quick`` keeps that short).

``--tune`` (CUDA) sweeps the concept-attention block sizes at the largest batch and records the fastest
configs, to refine the defaults in ``lvg/kernels/concept_attention.py``.

On CUDA each timed call takes the next of several random input sets whose ``V`` together exceed the L2
several times (batch 1's 1.4 MB would otherwise be read from the cache). Writes ``bench_vci_<name>.json``
into ``--out`` (default ``benchmarks/results``) and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import itertools
import json
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lvg.kernels import triton_available
from lvg.kernels.vci import VCIOutput, vci_reference

N_PATCHES, WIDTH, N_CONCEPTS, N_ATTRS = 900, 768, 100, 14
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TARGET_SPEEDUP, TARGET_FLOOR_RATIO = 3.0, 2.0
# On CUDA the timed calls rotate over input sets holding at least this many bytes of V (the H200's L2 is
# 50 MB), at most MAX_SETS of them.
ROTATE_BYTES, MAX_SETS = 256 << 20, 256


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], device: torch.device, *, warmup: int, iters: int, reps: int = 5) -> float:
    """Median seconds per call over ``reps`` timed groups of ``iters`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    samples = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1e3 / iters)
        else:
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            samples.append((time.perf_counter() - t0) / iters)
    return statistics.median(samples)


def _copy_bandwidth(device: torch.device, nbytes: int, *, warmup: int, iters: int) -> float:
    """Device copy bandwidth in bytes/s, counting the read and the write (``dst.copy_(src)``)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    sec = _time(lambda: dst.copy_(src), device, warmup=warmup, iters=iters)
    return 2 * src.numel() * 4 / sec


def _peak_memory(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Bytes allocated at the peak of one call, above what was allocated before it (CUDA only)."""
    if device.type != "cuda":
        return None
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    out = fn()
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del out
    return peak


def _inputs(batch: int, dtype: torch.dtype, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(batch, N_PATCHES, WIDTH, generator=g)
    t = torch.randn(batch, WIDTH, generator=g)
    a = torch.randn(batch, N_ATTRS, WIDTH, generator=g)
    c = torch.nn.init.orthogonal_(torch.empty(N_CONCEPTS, WIDTH), generator=g)  # the model's concept init
    return tuple(x.to(device=device, dtype=dtype) for x in (v, t, a, c))


def _impls(device: torch.device, compile_: bool) -> dict[str, Callable[..., VCIOutput]]:
    impls: dict[str, Callable[..., VCIOutput]] = {"reference": vci_reference}
    if compile_:
        impls["reference+compile"] = torch.compile(vci_reference, dynamic=False)
    if device.type == "cuda" and triton_available():
        from lvg.kernels import get_vci

        vci_triton = get_vci("triton")
        impls["triton"] = vci_triton
        if compile_:
            impls["triton+compile"] = torch.compile(vci_triton, dynamic=False)
    return impls


def _check(out: VCIOutput, ref: VCIOutput) -> dict[str, float]:
    """How far an implementation is from the eager reference (masks may differ on ties with the mean)."""
    return {
        "max_abs_diff": float((out.attrs.float() - ref.attrs.float()).abs().max()),
        "mask_disagreement": float((out.mask != ref.mask).float().mean()),
    }


def _tune(batch: int, dtype: torch.dtype, device: torch.device, *, warmup: int, iters: int) -> list[dict]:
    """Time the concept-attention kernel over a grid of block sizes; fastest first."""
    from lvg._progress import progress
    from lvg.kernels.concept_attention import concept_attention_triton
    from lvg.kernels.patch_select import patch_select_reference

    v, t, _, c = _inputs(batch, dtype, device)
    mask = patch_select_reference(v, t)[1]
    scale = WIDTH**-0.5
    full = 1 << (WIDTH - 1).bit_length()
    grid = itertools.product((16, 32, 64), (32, 64), (64,), (128, 256, full), (4, 8), (2, 3))
    configs = [
        {"BLOCK_C": bc, "BLOCK_N": bn, "BLOCK_DK": bk, "BLOCK_DO": bo, "num_warps": w, "num_stages": s}
        for bc, bn, bk, bo, w, s in grid
        if bc * bo <= 32768  # the fp32 accumulator must fit in registers
    ]
    rows = []
    for cfg in progress(configs, desc="tuning", disable=False):
        try:
            sec = _time(functools.partial(concept_attention_triton, v, mask, c, scale, config=cfg), device,
                        warmup=warmup, iters=iters, reps=3)
        except Exception as err:  # noqa: BLE001 - a config that does not compile (e.g. out of shared memory)
            rows.append({"config": cfg, "error": type(err).__name__})
            continue
        rows.append({"config": cfg, "ms": sec * 1e3})
    return sorted(rows, key=lambda r: r.get("ms", float("inf")))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _slug(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 8 64 (--quick: 1 8)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--iters", type=int, default=None, help="calls per timed group")
    parser.add_argument("--quick", action="store_true", help="small batches, few iterations, no torch.compile")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compiled implementations")
    parser.add_argument("--tune", action="store_true", help="CUDA: sweep concept-attention block sizes")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default=None,
                        help="write bench_vci_NAME.json (default: cpu, or the GPU's name, e.g. nvidia-h200)")
    return parser.parse_args(argv)


def _input_sets(batch: int, dtype: torch.dtype, device: torch.device) -> list[tuple[torch.Tensor, ...]]:
    """``(v, t, a)`` sets whose ``V`` together exceed the GPU's L2 several times (one set on the CPU and for
    batches already that large): timing one buffer over and over would measure the cache, not the memory.
    Each set draws its own random values."""
    elt = torch.empty((), dtype=dtype).element_size()
    v_bytes = batch * N_PATCHES * WIDTH * elt
    n = min(MAX_SETS, max(1, -(-ROTATE_BYTES // v_bytes))) if device.type == "cuda" else 1
    if n == 1:
        return [_inputs(batch, dtype, device)[:3]]
    g = torch.Generator(device=device).manual_seed(1)
    return [tuple(torch.randn(*shape, generator=g, device=device, dtype=dtype)
                  for shape in ((batch, N_PATCHES, WIDTH), (batch, WIDTH), (batch, N_ATTRS, WIDTH)))
            for _ in range(n)]


def _measure(impls: dict[str, Callable[..., VCIOutput]], batches: list[int], dtype: torch.dtype,
             device: torch.device, copy_bw: float, *, warmup: int, iters: int) -> list[dict[str, Any]]:
    """One row per (batch, implementation): median time, effective bandwidth, the floor, the error."""
    from lvg._progress import progress

    elt = torch.empty((), dtype=dtype).element_size()
    c = _inputs(1, dtype, device)[3]  # the concepts are weights: one tensor, shared by every call
    rows = []
    for batch in progress(batches, desc="vci", disable=False):
        sets = _input_sets(batch, dtype, device)
        v_bytes = batch * N_PATCHES * WIDTH * elt
        for name, fn in impls.items():
            order = itertools.cycle(sets)
            sec = _time(lambda fn=fn, order=order: fn(*next(order), c), device, warmup=warmup, iters=iters)
            v, t, a = sets[0]
            call = functools.partial(fn, v, t, a, c)
            row = {
                "batch": batch, "impl": name, "ms": sec * 1e3, "input_sets": len(sets),
                "v_bytes": v_bytes, "effective_gbps": v_bytes / sec / 1e9,
                "bandwidth_share": (v_bytes / sec) / copy_bw, "x_floor": sec / (v_bytes / copy_bw),
                "peak_mem_mb": None, **_check(call(), vci_reference(v, t, a, c)),
            }
            peak = _peak_memory(call, device)
            row["peak_mem_mb"] = None if peak is None else peak / 2**20
            rows.append(row)
        del sets
    by_key = {(r["batch"], r["impl"]): r for r in rows}
    for r in rows:
        eager = by_key.get((r["batch"], "reference"))
        r["speedup_vs_eager_ref"] = eager["ms"] / r["ms"] if eager else None
    return rows


def _targets(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Issue 22's targets at the largest batch (64 or more): Triton vs the eager reference and the floor."""
    big = max(r["batch"] for r in rows)
    tri = next((r for r in rows if r["batch"] == big and r["impl"] == "triton"), None)
    if tri is None or big < 64:
        return None
    return {
        "batch": big,
        "speedup_vs_eager_ref": tri["speedup_vs_eager_ref"], "speedup_target": TARGET_SPEEDUP,
        "x_floor": tri["x_floor"], "x_floor_target": TARGET_FLOOR_RATIO,
        "met": tri["speedup_vs_eager_ref"] >= TARGET_SPEEDUP and tri["x_floor"] <= TARGET_FLOOR_RATIO,
    }


def _print_table(result: dict[str, Any]) -> None:
    rows, targets = result["rows"], result["targets"]
    print(f"\n{result['device']}  {result['dtype']}  copy bandwidth {result['copy_bandwidth_gbps']:.1f} GB/s  "
          f"(torch {result['torch']})")
    head = (f"{'batch':>5} {'impl':<18} {'ms':>9} {'GB/s':>8} {'%copy':>6} {'x floor':>8} {'vs eager':>8} "
            f"{'peak MB':>8} {'max|diff|':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        peak = "-" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.1f}"
        print(f"{r['batch']:>5} {r['impl']:<18} {r['ms']:>9.3f} {r['effective_gbps']:>8.1f} "
              f"{100 * r['bandwidth_share']:>5.1f}% {r['x_floor']:>8.2f} {r['speedup_vs_eager_ref']:>7.2f}x "
              f"{peak:>8} {r['max_abs_diff']:>9.2e}")
    if targets:
        print(f"batch {targets['batch']}: triton {targets['speedup_vs_eager_ref']:.2f}x vs eager reference (target "
              f">= {TARGET_SPEEDUP}x), {targets['x_floor']:.2f}x the bandwidth floor (target <= "
              f"{TARGET_FLOOR_RATIO}x): {'MET' if targets['met'] else 'NOT MET'}")
    if result["tune_top"]:
        print("fastest concept-attention configs:", *[f"  {r}" for r in result["tune_top"][:5]], sep="\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype_name = args.dtype or ("fp16" if device.type == "cuda" else "fp32")
    dtype = DTYPES[dtype_name]
    batches = args.batches or ([1, 8] if args.quick else [1, 8, 64])
    iters = args.iters or (2 if args.quick else (20 if device.type == "cuda" else 5))
    warmup = 1 if args.quick else (10 if device.type == "cuda" else 2)
    impls = _impls(device, compile_=not (args.quick or args.no_compile))

    elt = torch.empty((), dtype=dtype).element_size()
    v_bytes_max = max(batches) * N_PATCHES * WIDTH * elt
    copy_bw = _copy_bandwidth(device, max(v_bytes_max, 256 << 20 if device.type == "cuda" else 64 << 20),
                              warmup=warmup, iters=iters)
    rows = _measure(impls, batches, dtype, device, copy_bw, warmup=warmup, iters=iters)
    tune = _tune(max(batches), dtype, device, warmup=3, iters=10) if args.tune and "triton" in impls else None
    result = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "device": _device_name(device),
        "torch": torch.__version__,
        "triton": _triton_version(),
        "python": platform.python_version(),
        "dtype": dtype_name,
        "sizes": {"patches": N_PATCHES, "width": WIDTH, "concepts": N_CONCEPTS, "attributes": N_ATTRS},
        "copy_bandwidth_gbps": copy_bw / 1e9,
        "notes": "one VCI call (one encoder layer); effective bandwidth = bytes of V read once / time; "
                 f"floor = V bytes / copy bandwidth (read + write counted); on CUDA the calls rotate over "
                 f"input sets of >= {ROTATE_BYTES >> 20} MiB of V in all; quick={args.quick}",
        "rows": rows,
        "targets": _targets(rows),
        "tune_top": tune[:10] if tune else None,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_vci_{args.name or _slug(device)}.json"
    path.write_text(json.dumps(result, indent=2))
    _print_table(result)
    print(f"wrote {path}")


def _triton_version() -> str | None:
    if not triton_available():
        return None
    import triton

    return triton.__version__


if __name__ == "__main__":
    main()
