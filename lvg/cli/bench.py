"""``lvg bench``: model latency, throughput and GFLOPs on synthetic inputs (torch-free)."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import typer

from lvg._progress import progress
from lvg.cli._common import PRECISION_HELP, echo_json, handle_errors
from lvg.errors import InputError


def _parse_batches(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--batch must be comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise InputError(f"--batch must list positive integers, got {text!r}")
    return values


def _sig(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant figures: a tiny model's share of the matmul rate is ~0.01, where
    rounding to a fixed number of decimals would cost several percent."""
    return float(f"{x:.{digits}g}")


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile of an ascending list (numpy's default method)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _print_table(be, runs: int, warmup: int, ceiling, rows: list[dict]) -> None:
    info, cfg = be.info, be.info.config
    gf = "n/a" if info.gflops_per_sample is None else f"{info.gflops_per_sample:.3f}"
    probe = "" if ceiling is None else (f"; matmul {ceiling.gflops_per_s:.0f} GFLOP/s ({ceiling.precision}, "
                                        f"{ceiling.engine}, {ceiling.threads} threads)")
    typer.echo(f"{cfg.name} ({be.precision}) on {be.device}; {gf} GFLOPs/sample; {runs} runs after {warmup} warm-up"
               + probe)
    cols = ("batch", "p50_ms", "p90_ms", "p99_ms", "throughput_per_s", "of_matmul")
    heads = ("batch", "p50 ms", "p90 ms", "p99 ms", "samples/s", "of matmul")
    typer.echo("  ".join(f"{h:>10}" for h in heads))
    for r in rows:
        typer.echo("  ".join(f"{'n/a' if r[c] is None else r[c]:>10}" for c in cols))  # no probe off the CPU


def _ceiling(be):
    """This machine's matmul rate at the backend's precision (CPU backends only; ``None`` elsewhere)."""
    from lvg.runtime.roofline import matmul_rate

    return matmul_rate(be.precision) if be.on_cpu else None


@handle_errors
def bench(
    model: Path | None = typer.Option(None, "--model", "-m", help="Model file (default: the bundled model)."),
    batch: str = typer.Option("1", "--batch", help="Comma-separated batch sizes, e.g. 1,8."),
    runs: int = typer.Option(20, "--runs", min=1, help="Timed runs per batch size."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed warm-up runs per batch size."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N | tensorrt."),
    backend: str = typer.Option("auto", "--backend", help="auto | onnxruntime | openvino | tensorrt | torch."),
    precision: str = typer.Option(
        "auto", "--precision", help=PRECISION_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the table as JSON."),
) -> None:
    """Measure model latency (p50 / p90 / p99), throughput and GFLOPs on synthetic inputs.

    Times the backend call alone (inputs already preprocessed), so numbers compare across backends. On the
    CPU, the achieved GFLOP/s is also given as a share of this machine's matmul rate at the same precision,
    measured first by a short probe (lvg.runtime.roofline): the distance to the roofline.

    Example:

        lvg bench --model model.onnx --batch 1,8 --runs 50
    """
    import numpy as np

    from lvg.runtime.backends import open_backend
    from lvg.runtime.grounder import default_model_path

    sizes = _parse_batches(batch)
    be = open_backend(model if model is not None else default_model_path(), backend=backend, device=device,
                      precision=precision)
    if be.note:
        typer.echo(f"note: {be.note}", err=True)
    ceiling = _ceiling(be)
    info = be.info
    cfg = info.config
    s, length = cfg.encoder.img_size, cfg.preprocess.max_text_len
    if be.fixed_batch:
        wrong = [b for b in sizes if b != be.max_batch]
        if wrong:
            raise InputError(f"this engine was built for batch {be.max_batch}; got --batch {batch}")
    rng = np.random.default_rng(0)
    rows = []
    bar = progress(total=len(sizes) * (runs + warmup), desc="bench")
    for b in sizes:
        image = rng.uniform(-1, 1, size=(b, 3, s, s)).astype(np.float32)  # (B, 3, S, S)
        ids = np.full((b, length), 1, dtype=np.int64)  # (B, L) pad
        mask = np.zeros((b, length), dtype=bool)
        n = max(3, length // 2)
        words = rng.integers(4, min(cfg.encoder.vocab_size, 500), (b, n - 2))  # (B, n - 2) random word ids
        ids[:, 0], ids[:, 1 : n - 1], ids[:, n - 1] = 0, words, 2
        mask[:, :n] = True
        times = []
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            be.run(image, ids, mask)
            dt = (time.perf_counter() - t0) * 1e3
            if i >= warmup:
                times.append(dt)
            bar.update(1)
        times.sort()
        mean = statistics.fmean(times)
        gf = info.gflops_per_sample
        rows.append(
            {
                "batch": b,
                "p50_ms": round(_percentile(times, 50), 3),
                "p90_ms": round(_percentile(times, 90), 3),
                "p99_ms": round(_percentile(times, 99), 3),
                "mean_ms": round(mean, 3),
                "throughput_per_s": round(b * 1e3 / mean, 2),
                "gflops_per_sample": gf,
                "tflops_per_s": _sig(gf * b / mean) if gf is not None else None,
                "of_matmul": _sig(gf * b / mean * 1e3 / ceiling.gflops_per_s)
                if gf is not None and ceiling is not None else None,
            }
        )
    bar.close()
    head = {
        "model": str(info.path),
        "variant": cfg.name,
        "backend": be.name,
        "device": be.device,
        "precision": be.precision,
        "gflops_per_sample": info.gflops_per_sample,
        "matmul": ceiling.to_dict() if ceiling is not None else None,
        "runs": runs,
        "warmup": warmup,
    }
    if json_out:
        echo_json({**head, "results": rows})
        return
    _print_table(be, runs, warmup, ceiling, rows)
    sys.stdout.flush()
