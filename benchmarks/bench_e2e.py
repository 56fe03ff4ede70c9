"""End-to-end latency, throughput and peak memory of Latent-VG across the backends on this machine.

    python benchmarks/bench_e2e.py [--variant lvg-b] [--device auto|cpu|cuda] [--batches 1,4] [--reps 5]
                                   [--backends eager,compile,ort,ort-fp16,ov,trt] [--quick] [--out DIR]
                                   [--precisions fp16,bf16] [--models lvg] [--compile-batches 1,64] [--budget-s S]
    python benchmarks/bench_e2e.py --report benchmarks/results/e2e_cpu.json   # re-render md + png

What one measurement is: ``B`` images (640x427 RGB, PIL) and ``B`` referring expressions go through the
runtime's preprocessing (one letterbox resize + normalisation, tokenisation), the model, and the
postprocessing (the probability map mapped back onto each image and thresholded). ``latency`` is that whole
path; ``model`` is the forward alone (numpy in, numpy out: host<->device copies and the final sync count).

Models, all built from the same variant with random weights (speed does not depend on the values):

- ``lvg``: the variant itself (lvg-b: 959 tokens through the encoder);
- ``nolatent``: its ``-nolatent`` sibling (941 tokens, no latent expressions);
- ``encoder``: the bare BEiT-3 encoder (``LatentVG.beit3``) fed ``max_text_len + latent tokens`` text
  positions, so it sees exactly ``lvg``'s token count; no latent modules, no pixel decoder.

Backends: ``eager`` (PyTorch eager, ``inference_mode``), ``compile`` (``torch.compile``; on CUDA in the
first of ``--precisions``, alone and with CUDA graphs, mode ``reduce-overhead``), ``ort`` (ONNX Runtime fp32
through the runtime's ``OnnxRuntimeBackend``), ``ort-fp16`` (CUDA only: a CPU without fast fp16 skips it),
``ov`` (CPU only, when OpenVINO is installed: the runtime's OpenVINO backend at bf16 on the fp32 file, and
at int8 on the file ``lvg export --int8`` writes from it, calibrated on 64 ``lvg data synth`` sentences),
``trt`` (TensorRT fp16 engines, when tensorrt is installed). On CUDA eager runs in fp32 and in each of
``--precisions``, and the latent variant runs with both VCI implementations (``reference`` and ``triton``)
for the eager and CUDA-graph backends. Each CUDA torch worker also measures, in its own process, a dense
bf16 matmul (the ceiling) and, after the rounds of each batch, the forward alone on inputs already on the
GPU between CUDA events (``device_ms``): the rows report that rate as a share of the matmul's.

Method: each (model, backend) lives in its own worker process (so peak RSS is per backend; per batch it is
reset through ``/proc/self/clear_refs``). Workers are warmed up, then measured in interleaved rounds: round
``r`` runs every case once, in an order reversed on alternate rounds, so slow drifts and other load on the
machine hit all cases alike. Ratios are medians of the per-round ratios. ONNX files are exported once into
``--cache`` (keyed by a hash of the model code). With ``--parallel-setup`` the workers load and warm up
side by side (compilations overlap; nothing is timed then). The outputs are rewritten after each batch.

Writes ``e2e_<device>.json`` and ``e2e_<device>.md`` (table, ratios, targets) and ``latency_vs_batch.png``
(``latency_vs_batch_<device>.png`` too) into ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _e2e_prepare import HERE, MODELS, Case, _tokenizer_path, prepare_int8, prepare_onnx
from _e2e_report import _model_costs, _notes, _plot, _summarise, analyse, to_markdown
from _e2e_worker import _Proc

SCHEMA = "lvg-bench-e2e/1"
ALL_BACKENDS = ("eager", "compile", "ort", "ort-fp16", "ov", "trt")


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    packages = ("latent-vg", "torch", "onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "pillow", "triton", "tensorrt")
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()



# ---------------------------------------------------------------------------------------------- planning


def plan(device: str, backends: list[str], batches: list[int], bare_batches: list[int], has: dict[str, bool],
         *, precisions: tuple[str, ...] = ("fp16",), models: tuple[str, ...] = MODELS,
         compile_batches: list[int] | None = None) -> tuple[list[Case], list[dict[str, str]]]:
    """The cases to run on ``device`` and the ones skipped (with the reason).

    On CUDA, ``precisions`` are the half precisions the eager cases run in besides fp32 (each with both VCI
    implementations); the first is the one compiled and the one the bare models use. ``models`` picks which
    of lvg / nolatent / encoder run; ``compile_batches`` limits the compiled cases to some batches (each new
    batch is a new compilation).
    """
    cases: list[Case] = []
    skipped: list[dict[str, str]] = []
    cuda = device == "cuda"
    lowp = precisions[0] if cuda else "fp32"
    bb = tuple(b for b in batches if b in bare_batches) or (batches[0],)
    cb = tuple(b for b in batches if compile_batches is None or b in compile_batches) or (batches[0],)
    bare = [m for m in ("nolatent", "encoder") if m in models]
    lvg = "lvg" in models
    for backend in backends:
        if backend == "eager":
            if lvg:
                cases.append(Case("lvg", "eager", "fp32", device, tuple(batches)))
            for p in precisions if cuda and lvg else ():
                cases.append(Case("lvg", "eager", p, device, tuple(batches)))
                if has["triton"]:
                    cases.append(Case("lvg", "eager", p, device, tuple(batches), impl="triton"))
            cases += [Case(m, "eager", lowp, device, bb) for m in bare]
        elif backend == "compile":
            if not has["compiler"]:
                skipped.append({"label": "*/compile", "reason": "torch.compile needs a C++ compiler on CPU"})
                continue
            if lvg and cuda:
                # Compilation alone, then with CUDA graphs: what each of the two gains.
                cases.append(Case("lvg", "compile", lowp, device, cb))
            if lvg:
                cases.append(Case("lvg", "compile", lowp, device, cb, cuda_graphs=cuda))
            if lvg and cuda and has["triton"]:
                cases.append(Case("lvg", "compile", lowp, device, cb, impl="triton", cuda_graphs=True))
            if cuda:
                cb_bare = tuple(b for b in cb if b in bb) or (cb[0],)
                cases += [Case(m, "compile", lowp, device, cb_bare, cuda_graphs=True) for m in bare]
        elif backend == "ort":
            if cuda and not has["ort_cuda"]:
                skipped.append({"label": "*/ort-fp32 (cuda)", "reason": "onnxruntime has no CUDA provider here"})
                continue
            cases += [Case(m, "ort", "fp32", device, tuple(batches) if m == "lvg" else bb) for m in MODELS
                      if m in models]
        elif backend == "ort-fp16":
            if not cuda:
                skipped.append({"label": "lvg/ort-fp16 (cpu)",
                                "reason": "no fast fp16 on this CPU: ONNX Runtime's CPU provider computes fp16 "
                                          "through casts to fp32"})
                continue
            if not has["ort_cuda"]:
                skipped.append({"label": "lvg/ort-fp16", "reason": "onnxruntime has no CUDA provider here"})
                continue
            cases.append(Case("lvg", "ort-fp16", "fp16", device, tuple(batches)))
        elif backend == "ov":
            if cuda or not has["openvino"]:
                skipped.append({"label": "lvg/ov-*", "reason": "OpenVINO runs on the CPU" if cuda else
                                "OpenVINO is not installed (pip install 'latent-vg[openvino]')"})
                continue
            cases += [Case("lvg", "ov", p, device, tuple(batches)) for p in ("bf16", "int8") if lvg]
        elif backend == "trt":
            if not (cuda and has["tensorrt"]):
                skipped.append({"label": "lvg/trt-fp16", "reason": "TensorRT is not installed" if cuda else
                                "TensorRT needs a CUDA device"})
                continue
            cases.append(Case("lvg", "trt", "fp16", device, tuple(batches)))
            cases += [Case("nolatent", "trt", "fp16", device, bb)] if "nolatent" in models else []
    return cases, skipped


def _capabilities(device: str) -> dict[str, bool]:
    import importlib.util
    import shutil

    has = {"triton": False, "tensorrt": False, "ort_cuda": False, "compiler": True,
           "openvino": importlib.util.find_spec("openvino") is not None}
    try:
        import onnxruntime as ort

        has["ort_cuda"] = "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        pass
    if device == "cuda":
        has["triton"] = importlib.util.find_spec("triton") is not None
        has["tensorrt"] = importlib.util.find_spec("tensorrt") is not None
    else:
        has["compiler"] = any(shutil.which(c) for c in ("g++", "clang++", "c++"))
    return has


# ---------------------------------------------------------------------------------------------- driver


def _resolve(args: argparse.Namespace) -> str:
    """The device, and the defaults that depend on it (filled into ``args``)."""
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device")
    cuda = device == "cuda"
    args.reps = args.reps or (30 if cuda else 5)
    args.reps_large = args.reps_large or (20 if cuda else 3)
    args.warmup = (5 if cuda else 1) if args.warmup is None else args.warmup
    args.batches = args.batches or ([1, 8, 64] if cuda else [1, 4])
    args.bare_batches = args.bare_batches or (args.batches if cuda else [args.batches[0]])
    args.backends = args.backends or list(ALL_BACKENDS)
    args.precisions = args.precisions or ["fp16"]
    args.models = args.models or list(MODELS)
    return device


def _start_workers(cases: list[Case], specs: list[dict[str, Any]], parallel: bool,
                   skipped: list[dict[str, str]]) -> list[_Proc]:
    """One worker process per case; the ones that fail to load are skipped (with their error)."""
    procs: list[_Proc] = []
    for case, spec in zip(cases, specs):
        procs.append(_Proc(case, spec))
        if not parallel:
            # One at a time: loading (and on CPU the export-free ONNX session setup) then competes with nothing.
            reply = procs[-1].recv()
            if not reply.get("ok"):
                procs[-1].error = reply.get("error")
    if parallel:
        for p in procs:
            reply = p.recv()
            if not reply.get("ok"):
                p.error = reply.get("error")
    live = []
    for p in procs:
        if p.error:
            skipped.append({"label": p.case.label, "reason": p.error})
            p.close()
        else:
            live.append(p)
    # The matmul ceiling of each CUDA worker, one worker at a time (probes run side by side would share the GPU).
    for p in live:
        if p.case.device == "cuda":
            p.call(op="probe")
    return live


def _fail(p: _Proc, batch: int, reply: dict[str, Any], skipped: list[dict[str, str]]) -> None:
    p.error = reply.get("error")
    skipped.append({"label": f"{p.case.label}@{batch}", "reason": p.error})


def _measure_batch(live: list[_Proc], batch: int, reps: int, args: argparse.Namespace, gap: float,
                   samples: dict[tuple[str, int], list[dict[str, float]]], skipped: list[dict[str, str]]) -> None:
    """Warm every case up at ``batch`` (side by side with --parallel-setup), then ``reps`` interleaved rounds,
    then (CUDA) the forward alone on device-resident inputs, case by case."""
    active = [p for p in live if batch in p.case.batches and not p.error]
    if args.parallel_setup:
        # Warm-ups are not timed, so the compilations of several cases may as well overlap.
        sent = [p for p in active if p.send(op="warmup", batch=batch, n=args.warmup)]
        replies = [(p, p.recv() if p in sent else {"ok": False, "error": "worker pipe closed"}) for p in active]
    else:
        replies = [(p, p.call(op="warmup", batch=batch, n=args.warmup)) for p in active]
    for p, reply in replies:
        if not reply.get("ok"):
            _fail(p, batch, reply, skipped)
    active = [p for p in active if not p.error]
    for r in range(reps):
        order = active if r % 2 == 0 else active[::-1]
        for p in order:
            if p.error:  # failed in an earlier round of this batch
                continue
            if gap:
                time.sleep(gap)  # lets the previous worker's spinning thread pools go idle
            reply = p.call(op="run", batch=batch)
            if not reply.get("ok"):
                _fail(p, batch, reply, skipped)
                continue
            samples.setdefault((p.case.label, batch), []).append(reply)
        print(f"[bench] batch {batch}: round {r + 1}/{reps} done", file=sys.stderr, flush=True)
    for p in active:
        if p.case.device == "cuda" and p.case.backend in ("eager", "compile") and not p.error:
            reply = p.call(op="device_time", batch=batch, n=reps)
            if not reply.get("ok"):
                _fail(p, batch, reply, skipped)


def run_benchmark(args: argparse.Namespace, on_batch: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
    """Plan, start the workers, measure batch after batch; ``on_batch`` gets the result so far after each."""
    import torch

    device = _resolve(args)
    from lvg.runtime.backends.ort_backend import physical_cores

    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    cache = args.cache
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / ".gitignore").exists():
        (cache / ".gitignore").write_text("# bench_e2e.py's export cache (ONNX files, engines): never committed\n*\n")
    cases, skipped = plan(device, args.backends, args.batches, args.bare_batches, _capabilities(device),
                          precisions=tuple(args.precisions), models=tuple(args.models),
                          compile_batches=args.compile_batches)
    costs = _model_costs(args.variant)

    load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load0 is not None and device == "cpu" and load0[0] > 0.5:
        # Contention skews the ratios, not only the times (ORT / eager read 0.95 instead of 0.78 under two
        # training processes), so say so before spending minutes on numbers that will mislead.
        print(f"warning: load average {load0[0]:.1f} before the benchmark: other processes are using the CPU; "
              "the results will not be comparable (run it on an idle machine)", file=sys.stderr, flush=True)
    t_start = time.perf_counter()
    onnx: dict[str, Path] = {}
    if any(c.backend in ("ort", "ov") for c in cases):
        onnx.update(prepare_onnx(args.variant, cache))
    if any(c.backend == "ov" and c.precision == "int8" for c in cases):
        onnx["lvg-int8"] = prepare_int8(onnx["lvg"], cache)
    onnx16: dict[str, Path] = {}
    if any(c.backend in ("ort-fp16", "trt") for c in cases):
        onnx16 = prepare_onnx(args.variant, cache, fp16=True)
    spm = _tokenizer_path(cache)
    prep_s = time.perf_counter() - t_start

    specs = [{"case": asdict(case), "variant": args.variant, "tokenizer": str(spm), "threads": threads,
              "onnx": {k: str(v) for k, v in (onnx16 if case.backend in ("ort-fp16", "trt") else onnx).items()},
              "cache": str(cache), "verbose": args.verbose} for case in cases]
    live = _start_workers(cases, specs, args.parallel_setup, skipped)
    samples: dict[tuple[str, int], list[dict[str, float]]] = {}
    result: dict[str, Any] = {}
    done: list[int] = []
    for batch in args.batches:
        if args.budget_s and time.perf_counter() - t_start > args.budget_s:
            skipped.append({"label": f"*@{batch}", "reason": f"not started: the {args.budget_s:g} s budget was spent"})
            continue
        reps = args.reps if batch == args.batches[0] else args.reps_large
        _measure_batch(live, batch, reps, args, 0.0 if device == "cuda" else args.gap, samples, skipped)
        done.append(batch)
        stats = {p.case.label: p.call(op="stats") for p in live}
        results = []
        for p in live:
            for b in (b for b in p.case.batches if b in done):
                s = samples.get((p.case.label, b))
                if s and len(s) == (args.reps if b == args.batches[0] else args.reps_large):
                    results.append(_summarise(p.case, b, s, stats[p.case.label], costs[p.case.model]))
        result = _assemble(args, device, threads, costs, results, list(skipped), load0, prep_s, t_start)
        if on_batch is not None:
            try:
                on_batch(result)
            except Exception as err:  # writing what was measured so far must not end the run
                print(f"warning: the results after batch {batch} could not be written: {err}", file=sys.stderr)
    for p in live:
        p.close()
    if not result:  # no batch started
        result = _assemble(args, device, threads, costs, [], skipped, load0, prep_s, t_start)
    return result


def _assemble(args: argparse.Namespace, device: str, threads: int, costs: dict[str, Any], results: list[dict],
              skipped: list[dict[str, str]], load0: Any, prep_s: float, t_start: float) -> dict[str, Any]:
    """The JSON document of a run (so far), ratios and targets included."""
    import statistics

    import torch

    from lvg.config import get_config

    probes = sorted({r["matmul_tflops"] for r in results if r.get("matmul_tflops")})
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "variant": args.variant,
        "img_size": get_config(args.variant).encoder.img_size,
        "device": {
            "kind": device,
            "name": torch.cuda.get_device_name() if device == "cuda" else _cpu_name(),
            "threads": threads,
            "logical_cpus": os.cpu_count(),
            "load_avg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "versions": _versions(),
        "settings": {"batches": args.batches, "reps": args.reps, "reps_large": args.reps_large,
                     "warmup": args.warmup, "backends": args.backends, "precisions": args.precisions,
                     "models": args.models, "compile_batches": args.compile_batches, "quick": args.quick,
                     "prepare_s": prep_s, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
                     "load_avg_at_start": load0, "wall_s": time.perf_counter() - t_start},
        "models": costs,
        "results": results,
        "skipped": skipped,
        "matmul_tflops": statistics.median(probes) if probes else None,
    }
    analyse(result)
    return result


def write_outputs(result: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    dev = result["device"]["kind"]
    plot = _plot(result, out)
    if plot is not None:
        result["plot"] = plot.name
    js = out / f"e2e_{dev}.json"
    md = out / f"e2e_{dev}.md"
    js.write_text(json.dumps(result, indent=2) + "\n")
    md.write_text(to_markdown(result, _notes(result)))
    return {"json": js, "md": md, **({"png": plot} if plot else {})}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x.strip()]

    def choices(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
        def parse(text: str) -> list[str]:
            out = [x.strip() for x in text.split(",") if x.strip()]
            bad = [x for x in out if x not in allowed]
            if bad or not out:
                raise argparse.ArgumentTypeError(f"unknown name(s) {bad}; choose from {', '.join(allowed)}")
            return out

        return parse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="lvg-b")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batches", type=ints, default=None, help="default: 1,4 on CPU; 1,8,64 on CUDA")
    p.add_argument("--bare-batches", type=ints, default=None,
                   help="batches for the nolatent / encoder models (default: the first batch on CPU, all on CUDA)")
    p.add_argument("--backends", type=choices(ALL_BACKENDS), default=None, help=f"subset of {','.join(ALL_BACKENDS)}")
    p.add_argument("--precisions", type=choices(("fp16", "bf16")), default=None,
                   help="CUDA: half precisions of the eager cases (default fp16); the first is also the compiled one")
    p.add_argument("--models", type=choices(MODELS), default=None, help=f"subset of {','.join(MODELS)} (default all)")
    p.add_argument("--compile-batches", type=ints, default=None,
                   help="batches of the compiled cases (default all; each batch is one more compilation)")
    p.add_argument("--budget-s", type=float, default=0.0,
                   help="start no further batch once this many seconds have passed (0: no limit); the JSON and "
                        "markdown are rewritten after every batch, so a run stopped later keeps what it measured")
    p.add_argument("--reps", type=int, default=None, help="interleaved rounds at the first batch")
    p.add_argument("--reps-large", type=int, default=None, help="rounds at the larger batches")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (default: physical cores)")
    p.add_argument("--gap", type=float, default=0.3, help="seconds between CPU runs (idle thread pools)")
    p.add_argument("--parallel-setup", action="store_true", help="start all workers at once (faster, noisier setup)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: lvg-tiny, batches 1,2, eager + ort, 2 rounds, parallel setup")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--cache", type=Path, default=HERE / ".cache")
    p.add_argument("--verbose", action="store_true", help="show the workers' stderr")
    p.add_argument("--report", type=Path, default=None,
                   help="re-render the markdown / plot (and ratios, targets) from an existing e2e_<device>.json")
    args = p.parse_args(argv)
    if args.quick:
        if args.variant == "lvg-b":
            args.variant = "lvg-tiny"
        args.batches = args.batches or [1, 2]
        args.backends = args.backends or ["eager", "ort"]
        args.reps = args.reps or 2
        args.reps_large = args.reps_large or 2
        args.warmup = 1 if args.warmup is None else args.warmup
        args.gap = 0.0
        args.parallel_setup = True
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report is not None:
        result = json.loads(args.report.read_text())
        analyse(result)
    else:
        result = run_benchmark(args, on_batch=lambda partial: write_outputs(partial, args.out))
    paths = write_outputs(result, args.out)
    print(Path(paths["md"]).read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)


if __name__ == "__main__":
    main()
