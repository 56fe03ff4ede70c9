"""``lvg infer`` and ``lvg bench``: the runtime's commands.

Torch-free at import; a ``.safetensors`` model loads the torch backend when the command runs.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path

import typer

from lvg._progress import progress
from lvg.cli._common import check_outputs, echo_json, echo_warnings, handle_errors
from lvg.errors import InputError


@handle_errors
def infer(
    image: Path = typer.Argument(..., help="Image file (any format Pillow reads)."),
    text: str = typer.Argument(..., help="Referring expression, e.g. \"man on the left\"."),
    model: Path | None = typer.Option(
        None, "--model", "-m", help="Model file: .onnx, .engine/.plan or .safetensors (default: the bundled model)."
    ),
    task: str | None = typer.Option(None, "--task", help="ris | rec | gres (default: gres for GRES models, else ris)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write the overlay (mask and box over the image); format by suffix (.png, .jpg, ...)."
    ),
    mask: Path | None = typer.Option(
        None, "--mask", help="Write the mask (255 = object) as .png (or lossless .tif / .bmp)."
    ),
    attention: Path | None = typer.Option(
        None, "--attention",
        help="Write per-expression attention maps as an image, format by suffix (torch checkpoints only).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON (mask as COCO RLE)."),
    device: str = typer.Option(
        "auto", "--device", help="auto | cpu | cuda | cuda:N | tensorrt (ONNX Runtime's TRT EP)."
    ),
    backend: str = typer.Option("auto", "--backend", help="auto (by file suffix) | onnxruntime | tensorrt | torch."),
    tokenizer: Path | None = typer.Option(None, "--tokenizer", help="Sentencepiece file overriding the embedded one."),
    threshold: float | None = typer.Option(None, "--threshold", help="Mask threshold (default: the model's, 0.35)."),
) -> None:
    """Segment and box the object TEXT refers to in IMAGE.

    Examples:

        lvg infer photo.jpg "man on the left" --model model.onnx --out overlay.png

        lvg infer photo.jpg "the red car" --model model.onnx --task rec --json
    """
    from lvg.runtime.grounder import Grounder

    if task is not None and task.lower() not in ("ris", "rec", "gres"):
        raise InputError(f"unknown task {task!r}; choose ris, rec or gres")
    check_outputs([image, model, tokenizer], {"--out": out, "--mask": mask, "--attention": attention})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = Grounder.load(model, backend=backend, device=device, tokenizer=tokenizer)
        result = g.predict(image, text, task=task, mask_threshold=threshold, return_attention=attention is not None)
    echo_warnings(caught)
    result.write_outputs(overlay=out, mask=mask, attention=attention)  # all of them, or none
    if json_out:
        data = result.to_dict()
        data["outputs"] = {k: str(v) for k, v in (("overlay", out), ("mask", mask), ("attention", attention)) if v}
        echo_json(data)
        return
    w, h = result.image_size
    area = int(result.mask.sum())
    if result.no_target:
        typer.echo(f"no target (p={result.no_target_prob:.3f}) for {text!r}")
    else:
        box = "none" if result.box is None else "[" + ", ".join(str(v) for v in result.box) + "]"
        share = 100 * area / max(w * h, 1)
        typer.echo(f"mask {area} px ({share:.1f}% of {w}x{h}), box {box}, score {result.score:.3f}")
    t = result.timings
    typer.echo(
        f"time {t['total']:.1f} ms (preprocess {t['preprocess']:.1f}, inference {t['inference']:.1f}, "
        f"postprocess {t['postprocess']:.1f}) on {result.model.get('device')}"
    )
    for label, path in (("overlay", out), ("mask", mask), ("attention", attention)):
        if path is not None:
            typer.echo(f"{label}: {path}")


def _parse_batches(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--batch must be comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise InputError(f"--batch must list positive integers, got {text!r}")
    return values


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile of an ascending list (numpy's default method)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@handle_errors
def bench(
    model: Path | None = typer.Option(None, "--model", "-m", help="Model file (default: the bundled model)."),
    batch: str = typer.Option("1", "--batch", help="Comma-separated batch sizes, e.g. 1,8."),
    runs: int = typer.Option(20, "--runs", min=1, help="Timed runs per batch size."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed warm-up runs per batch size."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N | tensorrt."),
    backend: str = typer.Option("auto", "--backend", help="auto | onnxruntime | tensorrt | torch."),
    json_out: bool = typer.Option(False, "--json", help="Print the table as JSON."),
) -> None:
    """Measure model latency (p50 / p90 / p99), throughput and GFLOPs on synthetic inputs.

    Times the backend call alone (inputs already preprocessed), so numbers compare across backends.

    Example:

        lvg bench --model model.onnx --batch 1,8 --runs 50
    """
    import numpy as np

    from lvg.runtime.backends import open_backend
    from lvg.runtime.grounder import default_model_path

    sizes = _parse_batches(batch)
    be = open_backend(model if model is not None else default_model_path(), backend=backend, device=device)
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
                "tflops_per_s": round(gf * b / mean, 4) if gf is not None else None,
            }
        )
    bar.close()
    head = {
        "model": str(info.path),
        "variant": cfg.name,
        "backend": be.name,
        "device": be.device,
        "precision": info.precision,
        "gflops_per_sample": info.gflops_per_sample,
        "runs": runs,
        "warmup": warmup,
    }
    if json_out:
        echo_json({**head, "results": rows})
        return
    gf = "n/a" if info.gflops_per_sample is None else f"{info.gflops_per_sample:.3f}"
    typer.echo(f"{cfg.name} ({info.precision}) on {be.device}; {gf} GFLOPs/sample; {runs} runs after {warmup} warm-up")
    cols = ("batch", "p50_ms", "p90_ms", "p99_ms", "throughput_per_s")
    heads = ("batch", "p50 ms", "p90 ms", "p99 ms", "samples/s")
    typer.echo("  ".join(f"{h:>10}" for h in heads))
    for r in rows:
        typer.echo("  ".join(f"{r[c]:>10}" for c in cols))
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Add ``infer`` and ``bench`` to ``app``."""
    app.command("infer")(infer)
    app.command("bench")(bench)
