"""Soak test: thousands of predictions on one Grounder must not grow resident memory.

    python benchmarks/bench_soak.py [--model model.onnx] [--requests 2000] [--warmup 200]
                                    [--threads 1] [--max-growth-pct 5] [--out benchmarks/results/soak_cpu.json]

Without ``--model`` it builds a randomly initialised lvg-tiny checkpoint and exports it to ONNX in a
temporary folder (needs the ``torch`` and ``export`` extras); with ``--model`` only the torch-free
runtime is imported, so the measured process is what a deployed service runs.

The request stream cycles through real files written here (PNG / JPEG / grayscale / palette of
several sizes), numpy arrays, ordinary, emoji, right-to-left and over-long texts, and - every 10th
request - a bad one (a truncated JPEG, an empty text) that must raise ``lvg.errors.InputError``: the
error path has to be leak-free too. Resident memory (``/proc/self/statm``) is sampled after the warm-up
and every ``--sample-every`` requests; the run passes when the final RSS is less than
``--max-growth-pct`` above the post-warm-up RSS. Bounded: it always stops after ``--requests``.
Exit status 0 = pass, 1 = memory grew too much (or a request failed unexpectedly).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import resource
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

TEXTS = [
    "the man on the left",
    "dog sitting on the green grass",
    "the blue car behind the white truck 🚗",
    "الرجل على اليسار",
    "small\u200b child with a yellow balloon",
    " ".join(["left most person holding an umbrella"] * 40),  # over-long: truncated with a warning
]


def rss_bytes() -> int:
    """Current resident set size of this process (Linux ``/proc``; peak RSS from getrusage elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def build_default_model(root: Path) -> Path:
    """A random-weight lvg-tiny exported to ONNX (with its tokenizer) under ``root``."""
    import torch

    from lvg.core.artifact import tokenizer_metadata
    from lvg.core.tokenizer import Tokenizer, train_sentencepiece
    from lvg.export.onnx_export import export_onnx
    from lvg.modeling import build_model, save_checkpoint

    spm = train_sentencepiece([t for t in TEXTS] * 4, root / "soak.spm", vocab_size=200, seed=0)
    torch.manual_seed(0)
    model = build_model("lvg-tiny", impl="reference")
    with torch.no_grad():
        model.pixel_decoder.proj.weight.mul_(200.0)  # partial masks instead of ~0.5 everywhere
    tok = Tokenizer.from_file(spm)
    ckpt = save_checkpoint(model, root / "soak.safetensors", metadata=tokenizer_metadata(tok.model_bytes, tok.identity))
    out = root / "soak.onnx"
    export_onnx(ckpt, out, check=False)
    return out


def write_inputs(root: Path) -> tuple[list, list[Path]]:
    """Good image sources (paths and arrays) and bad image files, written under ``root``."""
    rng = np.random.default_rng(0)
    good: list = []
    for i, (w, h) in enumerate([(200, 120), (90, 160), (640, 480), (33, 21), (300, 300)]):
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        arr[:, : w // 2] //= 3
        fmt = ("png", "jpg")[i % 2]
        path = root / f"img{i}.{fmt}"
        Image.fromarray(arr).save(path)
        good.append(path)
        if i % 2:
            good.append(arr)
    Image.fromarray(rng.integers(0, 256, size=(50, 70), dtype=np.uint8), mode="L").save(root / "gray.png")
    Image.fromarray(rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)).quantize(16).save(root / "pal.png")
    good += [root / "gray.png", root / "pal.png"]
    full = root / "full.jpg"
    Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(full)
    (root / "cut.jpg").write_bytes(full.read_bytes()[:300])
    return good, [root / "cut.jpg"]


def soak(
    model: Path,
    *,
    requests: int = 2000,
    warmup: int = 200,
    threads: int = 1,
    sample_every: int = 100,
    workdir: Path,
    log=print,
) -> dict:
    """Run the soak and return its report (see the module docstring)."""
    from lvg.errors import InputError
    from lvg.runtime.grounder import Grounder

    g = Grounder.load(model, device="cpu")
    good, bad = write_inputs(workdir)
    counts = {"ok": 0, "input_errors": 0, "unexpected": 0}
    lock = threading.Lock()
    first_unexpected: list[str] = []

    def one(i: int) -> None:
        try:
            if i % 10 == 9:
                # Alternate a broken file and an empty text: both must be InputError.
                if (i // 10) % 2:
                    g.predict(bad[0], TEXTS[0])
                else:
                    g.predict(good[0], "\u200b \t")
                kind = "unexpected"  # a bad request that did not raise
            else:
                r = g.predict(good[i % len(good)], TEXTS[i % len(TEXTS)])
                kind = "ok" if r.mask.shape == r.prob.shape else "unexpected"
        except InputError:
            kind = "input_errors" if i % 10 == 9 else "unexpected"
        except Exception as exc:  # reported, never raised: the soak must finish
            kind = "unexpected"
            if not first_unexpected:
                first_unexpected.append(f"{type(exc).__name__}: {exc}")
        with lock:
            counts[kind] += 1

    def run_range(start: int, stop: int) -> None:
        if threads <= 1:
            for i in range(start, stop):
                one(i)
            return
        workers = [
            threading.Thread(target=lambda t=t: [one(i) for i in range(start + t, stop, threads)])
            for t in range(threads)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    warnings.simplefilter("ignore")  # the over-long text warns on every request by design
    t0 = time.perf_counter()
    run_range(0, warmup)
    gc.collect()
    base_rss, base_objects = rss_bytes(), len(gc.get_objects())
    log(f"after warm-up ({warmup} requests): RSS {base_rss / 2**20:.1f} MiB, {base_objects} gc objects")
    samples = [{"request": warmup, "rss_mib": round(base_rss / 2**20, 2)}]
    t1 = time.perf_counter()
    done = warmup
    while done < warmup + requests:
        stop = min(done + sample_every, warmup + requests)
        run_range(done, stop)
        done = stop
        samples.append({"request": done, "rss_mib": round(rss_bytes() / 2**20, 2)})
    t2 = time.perf_counter()
    gc.collect()
    end_rss, end_objects = rss_bytes(), len(gc.get_objects())
    growth = 100.0 * (end_rss - base_rss) / base_rss
    log(f"after {requests} more requests: RSS {end_rss / 2**20:.1f} MiB ({growth:+.2f}%), {end_objects} gc objects")
    return {
        "model": str(model),
        "variant": g.config.name,
        "backend": g.backend.name,
        "device": g.backend.device,
        "requests": requests,
        "warmup": warmup,
        "threads": threads,
        "counts": counts,
        "first_unexpected": first_unexpected[0] if first_unexpected else None,
        "rss_after_warmup_mib": round(base_rss / 2**20, 2),
        "rss_end_mib": round(end_rss / 2**20, 2),
        "rss_max_mib": max(s["rss_mib"] for s in samples),
        "rss_growth_pct": round(growth, 3),
        "gc_objects_after_warmup": base_objects,
        "gc_objects_end": end_objects,
        "samples": samples,
        "mean_ms_per_request": round((t2 - t1) * 1e3 / max(requests, 1), 3),
        "warmup_s": round(t1 - t0, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None,
                        help="a .onnx / .safetensors model (default: build lvg-tiny)")
    parser.add_argument("--requests", type=int, default=2000, help="measured requests after the warm-up")
    parser.add_argument("--warmup", type=int, default=200, help="requests before the baseline RSS is taken")
    parser.add_argument("--threads", type=int, default=1, help="threads sharing the one Grounder")
    parser.add_argument("--sample-every", type=int, default=100)
    parser.add_argument("--max-growth-pct", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "soak_cpu.json")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 0 or args.threads < 1 or args.sample_every < 1:
        parser.error("--requests, --threads and --sample-every must be positive, --warmup non-negative")

    with tempfile.TemporaryDirectory(prefix="lvg-soak-") as tmp:
        root = Path(tmp)
        model = args.model if args.model is not None else build_default_model(root)
        report = soak(
            model, requests=args.requests, warmup=args.warmup, threads=args.threads,
            sample_every=args.sample_every, workdir=root,
        )
    passed = report["rss_growth_pct"] < args.max_growth_pct and report["counts"]["unexpected"] == 0
    report.update(
        {
            "max_growth_pct": args.max_growth_pct,
            "passed": passed,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        }
    )
    if args.model is None:
        report["model"] = "lvg-tiny (random weights, exported to ONNX by this script)"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(
        f"{'PASS' if passed else 'FAIL'}: RSS growth {report['rss_growth_pct']:+.2f}% "
        f"(limit {args.max_growth_pct}%), {report['counts']}, {report['mean_ms_per_request']} ms/request -> {args.out}"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
