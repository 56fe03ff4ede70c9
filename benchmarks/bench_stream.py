"""Per-frame latency of ``Grounder.stream`` against ``Grounder.predict`` in a loop, over a folder of frames.

    python benchmarks/bench_stream.py [--frames DIR] [--model model.onnx] [--rounds 5] [--text "the red car"]

Without ``--frames``, 48 frames are drawn from the synthetic generator (640 x 480 JPEGs, as a camera folder
would hold). Each round times both ways over every frame, in alternating order, so slow drift of a shared
machine cancels out of the ratio: per-frame latency = wall time of the pass / frames (decoding, letterboxing,
inference and post-processing included). ``stream`` decodes and letterboxes the next frame in a background
thread while the model runs on the current one. Prints a table and writes ``benchmarks/results/stream_cpu.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _results import write_result
from PIL import Image

from lvg._progress import progress
from lvg.runtime.grounder import Grounder


def make_frames(folder: Path, n: int) -> list[Path]:
    """``n`` 640 x 480 JPEG frames of synthetic scenes (seed 9000, the held-out seed)."""
    from lvg.train.synth import make_scene

    paths = []
    for i in range(n):
        img = Image.fromarray(make_scene(9000, i).image).resize((640, 480))
        paths.append(folder / f"frame_{i:04d}.jpg")
        img.save(paths[-1], quality=90)
    return paths


def _loop(g: Grounder, frames: list[Path], text: str) -> float:
    start = time.perf_counter()
    for f in frames:
        g.predict(f, text)
    return (time.perf_counter() - start) * 1e3 / len(frames)


def _stream(g: Grounder, frames: list[Path], text: str) -> float:
    start = time.perf_counter()
    n = sum(1 for _ in g.stream(frames, text))
    return (time.perf_counter() - start) * 1e3 / n


def run(frames: list[Path], model: str | None, text: str, rounds: int) -> dict[str, Any]:
    g = Grounder.load(model, device="cpu")
    _loop(g, frames[:4], text)  # warm-up: the session's first runs allocate
    loop_ms, stream_ms = [], []
    bar = progress(total=rounds, desc="bench_stream")
    for r in range(rounds):
        order = (_loop, _stream) if r % 2 == 0 else (_stream, _loop)
        for fn in order:
            (loop_ms if fn is _loop else stream_ms).append(fn(g, frames, text))
        bar.update(1)
    bar.close()
    ratios = [s / lp for s, lp in zip(stream_ms, loop_ms)]
    return {
        "model": str(g.info.path), "variant": g.config.name, "frames": len(frames), "rounds": rounds,
        "frame_size": list(Image.open(frames[0]).size), "cpus": os.cpu_count(),
        "predict_loop_ms_per_frame": [round(v, 2) for v in loop_ms],
        "stream_ms_per_frame": [round(v, 2) for v in stream_ms],
        "median_predict_loop_ms": round(statistics.median(loop_ms), 2),
        "median_stream_ms": round(statistics.median(stream_ms), 2),
        "ratio_stream_over_loop": round(statistics.median(ratios), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=Path, default=None, help="folder of frames (default: 48 synthetic ones)")
    ap.add_argument("--model", default=None, help="model file (default: the bundled model)")
    ap.add_argument("--text", default="the big red shape")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=48, help="synthetic frames to draw without --frames")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.frames is not None:
            frames = sorted(p for p in args.frames.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        else:
            frames = make_frames(Path(tmp), args.count)
        result = run(frames, args.model, args.text, args.rounds)
    write_result(result, args.out, "stream_cpu.json")
    print(f"{result['variant']}, {result['frames']} frames of {result['frame_size'][0]}x{result['frame_size'][1]}, "
          f"{result['rounds']} rounds")
    print(f"{'':<28}{'ms / frame (median)':>22}")
    print(f"{'predict() in a loop':<28}{result['median_predict_loop_ms']:>22}")
    print(f"{'stream()':<28}{result['median_stream_ms']:>22}")
    print(f"{'ratio stream / loop':<28}{result['ratio_stream_over_loop']:>22}")


if __name__ == "__main__":
    main()
