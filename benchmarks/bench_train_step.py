"""The cost of one training step: samples/s, step time and peak memory of the trainer's own step.

    python benchmarks/bench_train_step.py [--variant lvg-b] [--batch 16] [--amp bf16] [--steps 10] [--warmup 3]
                                          [--device auto|cpu|cuda] [--out benchmarks/results] [--name NAME]

Runs :meth:`lvg.train.trainer.Trainer.train_step` (forward under the run's autocast, the training losses,
backward, gradient clipping, AdamW over the trainer's parameter groups) on random batches: normalised
random images, random token ids with random lengths, random rectangular target masks at the map's
resolution. The batch starts in pinned host memory, as the trainer's data loader leaves it, so the step
includes its copy to the device. Weights are random (the cost does not depend on their values).

Reported: the median step time over ``--steps`` steps after ``--warmup`` (each step ends with the loss read
back to the host, so the host clock brackets the device work), samples/s, the hours one million samples
take at that rate (the recipe's cost is its samples over this), and on CUDA the peak memory allocated and
reserved during the timed steps, an estimate of the achieved rate (3x the forward FLOPs: forward plus a
backward of twice its cost) and that rate as a share of a bf16 matmul probe run in the same process.
Writes ``train_step_<name>.json`` (name: the device kind by default).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

# Idle OpenMP threads sleep instead of spinning (as the lvg command sets it): with spinning, a CPU run on a
# machine where other processes hold cores slows down many times over. Must precede torch's import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from _gpu import matmul_tflops  # noqa: E402
from _results import write_result  # noqa: E402

HERE = Path(__file__).resolve().parent


def random_batch(cfg, batch: int, seed: int = 0, *, pin: bool = False) -> dict[str, torch.Tensor]:
    """A training batch as the data loader yields it: image, text ids / mask, target at the map's scale, no_target."""
    from lvg.export.onnx_export import example_inputs

    # The export check's inputs (images in [-1, 1], bos ids.. eos pad.. of varied lengths), plus targets.
    image, ids, mask = example_inputs(cfg, batch, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    side = cfg.prob_size
    target = torch.zeros(batch, side, side)
    corners = torch.randint(0, side // 2, (batch, 2), generator=g)
    extents = torch.randint(side // 8, side // 2, (batch, 2), generator=g)
    for i in range(batch):  # one rectangle per sample: a mask of a plausible size
        (y, x), (h, w) = corners[i].tolist(), extents[i].tolist()
        target[i, y:y + h, x:x + w] = 1.0
    out = {"image": image, "text_ids": ids, "text_mask": mask,
           "target": target, "no_target": torch.zeros(batch)}
    return {k: v.pin_memory() for k, v in out.items()} if pin else out


def make_trainer(variant: Any, batch: int, amp: str, device: torch.device, run_dir: Path):
    """A :class:`Trainer` holding a fresh model, its optimizer and mixed-precision state on ``device``, ready
    for ``train_step`` (no data, run directory or log: the parts a step does not touch). ``variant``: a name or
    a ``ModelConfig`` (a changed variant keeps its name). ``amp``: ``"off"``, ``"bf16"`` (CPU or CUDA) or
    ``"fp16"`` (CUDA; float32 elsewhere, the trainer's own rule)."""
    from lvg.modeling import build_model
    from lvg.train.config import TrainConfig
    from lvg.train.optim import build_optimizer
    from lvg.train.trainer import Trainer

    # fp16 autocast with loss scaling is a CUDA path; bf16 autocast runs on the CPU too.
    cpu_amp = "off" if amp == "fp16" else amp
    name = variant if isinstance(variant, str) else variant.name
    cfg = TrainConfig(variant=name, batch_size=batch, amp=amp if device.type == "cuda" else cpu_amp, steps=1000)
    trainer = Trainer(cfg, run_dir, device=str(device))
    torch.manual_seed(cfg.seed)
    trainer.device = device
    trainer.model = build_model(variant, impl=cfg.kernel_impl).to(device)
    trainer.ddp_model = trainer.model
    trainer.opt = build_optimizer(trainer.model, cfg)
    trainer.amp = cfg.amp
    trainer.scaler = torch.amp.GradScaler("cuda", enabled=(cfg.amp == "fp16"))
    trainer.step, trainer.total = 0, cfg.steps
    trainer.model.train()
    return trainer


def run(variant: str, batch: int, amp: str, device: torch.device, *, steps: int, warmup: int) -> dict[str, Any]:
    from lvg.modeling.cost import count_flops

    cuda = device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(variant, batch, amp, device, Path(tmp) / "run")
        batches = [random_batch(trainer.model.cfg, batch, seed=k, pin=cuda) for k in range(min(steps + warmup, 4))]
        t0 = time.perf_counter()
        for k in range(warmup):
            trainer.train_step(batches[k % len(batches)])
            trainer.step += 1
        warmup_s = time.perf_counter() - t0
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        times, losses = [], []
        for k in range(steps):
            t = time.perf_counter()
            parts = trainer.train_step(batches[k % len(batches)])  # reads the loss back: the step has ended
            times.append(time.perf_counter() - t)
            trainer.step += 1
            losses.append(parts["total"])
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
        reserved = torch.cuda.max_memory_reserved(device) / 2**20 if cuda else None
        impl = trainer.model.kernel_impl
        del trainer
    step_s = statistics.median(times)
    sps = batch / step_s
    gflops = count_flops(variant).total_gflops
    result: dict[str, Any] = {
        "variant": variant, "batch": batch, "amp": "off" if amp == "fp16" and not cuda else amp, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else "cpu", "kernel_impl": impl,
        "steps": steps, "warmup": warmup, "warmup_s": warmup_s,
        "step_ms": {"p50": step_s * 1e3, "min": min(times) * 1e3, "max": max(times) * 1e3},
        "samples_ms": [round(t * 1e3, 3) for t in times],
        "samples_per_s": sps, "hours_per_million_samples": 1e6 / sps / 3600,
        "losses_finite": all(x == x and abs(x) != float("inf") for x in losses),
        "peak_allocated_mib": peak, "peak_reserved_mib": reserved,
        "forward_gflops_per_sample": gflops,
        "train_tflops_3x_forward": 3 * gflops * sps / 1e3,
    }
    if cuda:
        probe = matmul_tflops()
        result["matmul_tflops"] = probe
        result["matmul_fraction"] = result["train_tflops_3x_forward"] / probe if probe else None
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="lvg-b")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--amp", choices=["off", "bf16", "fp16"], default="bf16", help="CUDA only (fp32 on the CPU)")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--name", default=None, help="write train_step_NAME.json (default: the device kind)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    kind = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device")
    # --amp is the CUDA setting; the CPU table of bench_train_cpu.py measures bf16 there.
    amp = args.amp if kind == "cuda" else "off"
    result = run(args.variant, args.batch, amp, torch.device(kind), steps=args.steps, warmup=args.warmup)
    mem = f", peak {result['peak_allocated_mib']:.0f} MiB allocated" if result["peak_allocated_mib"] else ""
    share = f" ({result['matmul_fraction']:.0%} of the bf16 matmul)" if result.get("matmul_fraction") else ""
    print(f"{result['variant']} training step, batch {result['batch']}, {result['amp']} on {result['device_name']}: "
          f"{result['step_ms']['p50']:.1f} ms, {result['samples_per_s']:.1f} samples/s{mem}; "
          f"~{result['train_tflops_3x_forward']:.1f} TFLOP/s{share}")
    write_result(result, args.out, f"train_step_{args.name or kind}.json")


if __name__ == "__main__":
    main()
