"""What the CUDA rows of the benchmarks share: why a GPU step cannot run here, and the matmul probe.

The probe is the ceiling the benchmarks report their achieved rates against: a dense bf16 matrix product
(8192 x 8192 x 8192, 2 FLOPs per multiply-add) on random data, timed with CUDA events after a warm-up,
the median of several groups. Call it in the process whose rate it is compared with (same context, same
clocks).
"""

from __future__ import annotations

import statistics


def cuda_skip_reason() -> str | None:
    """Why nothing can run on CUDA in this process (None when a CUDA device is usable)."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        return f"no CUDA device (torch {torch.__version__}, {build}, sees none)"
    return None


def matmul_tflops(n: int = 8192, *, warmup: int = 20, groups: int = 7, iters: int = 10) -> float | None:
    """Measured dense bf16 matmul rate of the current CUDA device in TFLOP/s; None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=g)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=g)
    out = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(warmup):
        torch.matmul(a, b, out=out)
    torch.cuda.synchronize()
    samples = []
    for _ in range(groups):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            torch.matmul(a, b, out=out)
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1e3 / iters)
    del a, b, out
    torch.cuda.empty_cache()
    return 2 * n**3 / statistics.median(samples) / 1e12
