"""Training throughput on this CPU: precision x threads for the trainer's own step, against the machine's
matmul rate measured in the same run, and whether the data pipeline keeps up.

    python benchmarks/bench_train_cpu.py [--variant lvg-s] [--batch 12] [--steps 6] [--warmup 2] [--threads 1,2]
                                         [--data data/synth-train:grefcoco-synth] [--out benchmarks/results]

Step cases: float32 and bf16 autocast, each on 1 and 2 threads (``--threads``, ``torch.set_num_threads``), the
trainer's ``train_step`` on random batches (``bench_train_step.random_batch``). For each thread count a matmul probe
(1024 x 768 x 3072, the shape class of the encoder's FFN) gives the machine's float32 and bf16 GFLOP/s; the
step's achieved rate (3x the forward FLOPs per sample) is reported as a fraction of the probe at its
precision. With ``--data``, one data worker's rate (samples/s of the training dataset's ``__getitem__``:
decode, letterbox, augment, tokenise, target) is compared with the fastest step: a ratio above 1 means one
worker process never starves the step. Writes ``train_cpu_<variant>.json`` and prints a table. Ratios come
from one run; the machine's load average is recorded beside them.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime

import bench_train_step  # noqa: E402
import torch  # noqa: E402
from _results import write_result  # noqa: E402

from lvg.runtime.roofline import SHAPE, best_seconds  # noqa: E402

HERE = Path(__file__).resolve().parent


def matmul_gflops(dtype: torch.dtype, *, m: int = SHAPE[0], k: int = SHAPE[1], n: int = SHAPE[2],
                  reps: int = 20) -> float:
    """torch's rate for ``(m, k) @ (k, n)`` (the runtime's probe shape) in ``dtype`` on the current thread
    setting, in GFLOP/s, timed as the runtime's probes are (the fastest call counts: a ceiling)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=g).to(dtype), torch.randn(k, n, generator=g).to(dtype)
    return 2 * m * k * n / best_seconds(lambda: a @ b, reps) / 1e9


def step_rate(variant: str, batch: int, bf16: bool, *, steps: int, warmup: int) -> float:
    """Samples/s of the trainer's step (median step time; bench_train_step's measurement)."""
    amp = "bf16" if bf16 else "off"
    result = bench_train_step.run(variant, batch, amp, torch.device("cpu"), steps=steps, warmup=warmup)
    return result["samples_per_s"]


def worker_rate(variant: str, data: str, split: str, samples: int) -> float:
    """Samples/s one process produces from the training dataset (what one loader worker delivers)."""
    from lvg.config import get_config
    from lvg.train.config import TrainConfig
    from lvg.train.run_data import build_data

    ds = build_data(TrainConfig(variant=variant, data=data, train_split=split, val_split=""), get_config(variant)).train
    ds[0]
    t = time.perf_counter()
    for i in range(1, samples + 1):
        ds[i % len(ds)]
    return samples / (time.perf_counter() - t)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from lvg.modeling.cost import count_flops

    gflops = count_flops(args.variant).total_gflops
    cases = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        probe = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
        for bf16 in (False, True):
            sps = step_rate(args.variant, args.batch, bf16, steps=args.steps, warmup=args.warmup)
            achieved = 3 * gflops * sps  # forward + backward (twice the forward), GFLOP/s
            prec = "bf16" if bf16 else "fp32"
            cases.append({"threads": threads, "precision": prec, "samples_per_s": sps,
                          "achieved_gflops": achieved, "matmul_gflops": probe[prec],
                          "matmul_fraction": achieved / probe[prec]})
    base = cases[0]["samples_per_s"]
    for c in cases:
        c["vs_fp32_1_thread"] = c["samples_per_s"] / base
    result: dict[str, Any] = {"variant": args.variant, "batch": args.batch, "forward_gflops_per_sample": gflops,
                              "cases": cases, "loadavg": Path("/proc/loadavg").read_text().split()[:3]}
    if args.data:
        torch.set_num_threads(1)
        rate = worker_rate(args.variant, args.data, args.split, args.samples)
        best = max(c["samples_per_s"] for c in cases)
        result["data_worker_samples_per_s"] = rate
        result["data_worker_vs_fastest_step"] = rate / best
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="lvg-s")
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2],
                   help="comma-separated thread counts (default 1,2)")
    p.add_argument("--data", default=None, help="a training dataset spec, to rate one data worker")
    p.add_argument("--split", default="train", help="the dataset split the data worker reads")
    p.add_argument("--samples", type=int, default=60, help="samples drawn to rate the data worker")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    result = run(args)
    print(f"{args.variant}, batch {args.batch}, load {' '.join(result['loadavg'])}")
    print("threads  precision  samples/s  vs fp32 1t  GFLOP/s  matmul GFLOP/s  fraction")
    for c in result["cases"]:
        print(f"{c['threads']:>7}  {c['precision']:>9}  {c['samples_per_s']:>9.2f}  {c['vs_fp32_1_thread']:>10.2f}"
              f"  {c['achieved_gflops']:>7.0f}  {c['matmul_gflops']:>14.0f}  {c['matmul_fraction']:>8.0%}")
    if "data_worker_samples_per_s" in result:
        print(f"one data worker: {result['data_worker_samples_per_s']:.1f} samples/s, "
              f"{result['data_worker_vs_fastest_step']:.1f}x the fastest step")
    write_result(result, args.out, f"train_cpu_{args.variant}.json")


if __name__ == "__main__":
    main()
