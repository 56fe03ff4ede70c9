"""The bookkeeping of ``gpu_check.sh``: the environment, one record per step, and the closing summary.

    python benchmarks/_gpu_check.py --out OUT env                       # prints why GPU steps skip ('' if none)
    python benchmarks/_gpu_check.py --out OUT record STEP STATUS SECONDS [--reason R] [--log F --offset N] -- CMD...
    python benchmarks/_gpu_check.py --out OUT summary                   # targets + the final table

Everything goes into ``OUT/gpu_check.json``; the benchmarks' own files are read from ``OUT/results``. Only
``env`` imports torch (once), so a record costs an interpreter start and no more.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

SCHEMA = "lvg-gpu-check/1"
STEPS = ("install", "pytest", "vci", "train", "e2e")
# Issue 22's targets.
VCI_SPEEDUP, VCI_X_FLOOR = 3.0, 2.0
B1_MS, MATMUL_SHARE = 2.5, 0.50
# The rows of the README's GPU table, in the order readme_rows fills them.
README_ROWS = (
    "Triton VCI vs the eager reference, batch 64 (target >= 3x)",
    "Triton VCI time over the bandwidth floor, batch 64 (target <= 2x)",
    "lvg-b batch-1 model latency, compile + CUDA graphs (target < 2.5 ms)",
    "lvg-b batch-64 rate / bf16 matmul rate in the same process (target >= 50%)",
    "lvg-b training step, batch 16, bf16: samples/s (peak memory)",
    "CUDA tests: tests/kernels tests/modeling -m 'gpu or not slow'",
)
_PYTEST_SUMMARY = re.compile(r"^=+ (.*\b(passed|failed|error|errors|skipped|deselected)\b.*) in [\d.]+s.* =+$")


def _state_path(out: Path) -> Path:
    return out / "gpu_check.json"


def load(out: Path) -> dict[str, Any]:
    path = _state_path(out)
    if path.is_file():
        return json.loads(path.read_text())
    return {"schema": SCHEMA, "date": dt.datetime.now().isoformat(timespec="seconds"), "env": {}, "steps": {}}


def save(out: Path, state: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = _state_path(out).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(_state_path(out))


# ------------------------------------------------------------------------------------------ environment


def environment() -> dict[str, Any]:
    """Versions, the device and its state as found (clocks, temperature, power), and why CUDA is unusable."""
    from importlib import metadata

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _gpu import cuda_skip_reason

    env: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                           "host": platform.node()}
    for pkg in ("torch", "triton", "onnxruntime", "onnx", "numpy", "setuptools", "pip", "pytest"):
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env[pkg] = None
    env["skip_reason"] = cuda_skip_reason()
    if env["skip_reason"] is None:
        import torch

        props = torch.cuda.get_device_properties(0)
        env["device"] = torch.cuda.get_device_name(0)
        env["capability"] = f"{props.major}.{props.minor}"
        env["memory_gib"] = round(props.total_memory / 2**30, 1)
        env["torch_cuda"] = torch.version.cuda
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,"
             "utilization.gpu,memory.used", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=15)
        env["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        env["nvidia_smi"] = f"not available ({type(err).__name__})"
    return env


# ---------------------------------------------------------------------------------------------- records


def pytest_summary(log: str) -> dict[str, Any]:
    """The summary line of a pytest run (``12 passed, 3 skipped``) and its FAILED / ERROR lines."""
    line = None
    for text in log.splitlines():
        m = _PYTEST_SUMMARY.match(text.strip())
        if m:
            line = m.group(1)
    if line is None:  # -q prints the counts without the rule
        counts = [t.strip() for t in log.splitlines() if re.match(r"^\d+ (passed|failed|skipped|error)", t.strip())]
        line = counts[-1] if counts else None
    failed = [t.strip() for t in log.splitlines() if t.startswith(("FAILED ", "ERROR "))]
    return {"summary": line, "failed": failed[:20]}


def record(out: Path, step: str, status: str, seconds: float, *, reason: str | None = None, rc: int | None = None,
           limit: float | None = None, log: Path | None = None, offset: int = 0,
           command: list[str] | None = None) -> dict[str, Any]:
    """Store one step's outcome; with ``log``, its output from byte ``offset`` on gives a tail (and for pytest
    the summary line)."""
    state = load(out)
    entry: dict[str, Any] = {"status": status, "seconds": round(seconds, 1)}
    if command:
        entry["command"] = command
    if reason:
        entry["reason"] = reason
    if rc is not None:
        entry["rc"] = rc
    if limit is not None:
        entry["limit_s"] = limit
    if log is not None and log.is_file():
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        entry["tail"] = text.splitlines()[-8:]
        if step == "pytest":
            entry.update(pytest_summary(text))
    state["steps"][step] = entry
    save(out, state)
    return entry


# ---------------------------------------------------------------------------------------------- summary


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _target(name: str, value: float | None, limit: float, *, at_least: bool, unit: str = "") -> dict[str, Any]:
    met = None if value is None else (value >= limit if at_least else value <= limit)
    return {"target": name, "value": value, "limit": limit, "at_least": at_least, "unit": unit, "met": met}


def targets(results: Path) -> list[dict[str, Any]]:
    """Issue 22's targets from the benchmarks' JSON files (value None: not measured)."""
    vci = _read(results / "bench_vci_cuda.json") or {}
    big = next((r for r in reversed(vci.get("rows", [])) if r["impl"] == "triton" and r["batch"] >= 64), None)
    e2e = _read(results / "e2e_cuda.json") or {}
    rows = [r for r in e2e.get("results", []) if r["model"] == "lvg"]
    cg1 = [r for r in rows if r["batch"] == 1 and r["cuda_graphs"]]
    best1 = min(cg1, key=lambda r: r["model_ms"]["p50"]) if cg1 else None
    b64 = [r for r in rows if r["batch"] == 64 and r.get("matmul_fraction")]
    best64 = max(b64, key=lambda r: r["matmul_fraction"]) if b64 else None
    return [
        _target("Triton VCI vs the eager reference, batch 64", big and big["speedup_vs_eager_ref"], VCI_SPEEDUP,
                at_least=True, unit="x"),
        _target("Triton VCI time over the bandwidth floor, batch 64", big and big["x_floor"], VCI_X_FLOOR,
                at_least=False, unit="x"),
        _target(f"lvg-b batch-1 model latency, compile + CUDA graphs ({best1['label'] if best1 else '-'})",
                best1 and best1["model_ms"]["p50"], B1_MS, at_least=False, unit="ms"),
        _target(f"lvg-b batch-64 rate / bf16 matmul rate ({best64['label'] if best64 else '-'})",
                best64 and best64["matmul_fraction"], MATMUL_SHARE, at_least=True),
    ]


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "":
        return f"{value:.0%}"
    return f"{value:.2f}{' ' if unit == 'ms' else ''}{unit}"


def readme_rows(state: dict[str, Any], results: Path) -> list[str]:
    """The README's H200 table, filled from this run ('-' where nothing was measured)."""
    train = _read(results / "train_step_cuda.json") or {}
    env, tg = state["env"], state["targets"]
    pytest = state["steps"].get("pytest", {})
    cells = [_fmt(t["value"], t["unit"]) for t in tg]
    if train.get("samples_per_s"):
        cells.append(f"{train['samples_per_s']:.1f} ({train['peak_allocated_mib'] / 1024:.1f} GiB)")
    else:
        cells.append("-")
    cells.append(pytest.get("summary") or "-")
    names = [*README_ROWS]
    return [f"| measured {state['date'][:10]} | {env.get('device', '-')}, torch {env.get('torch')} |", "| --- | --- |",
            *(f"| {name} | {cell} |" for name, cell in zip(names, cells))]


def summary(out: Path) -> str:
    """Evaluate the targets, store them, and return the closing table."""
    state = load(out)
    results = out / "results"
    state["targets"] = targets(results)
    state["readme_table"] = readme_rows(state, results)
    save(out, state)
    env = state["env"]
    head = env.get("device") or f"no GPU ({env.get('skip_reason')})"
    lines = [f"GPU check {state['date']}: {head}; torch {env.get('torch')}, triton {env.get('triton')}",
             f"{'step':<8} {'status':<8} {'s':>6}  note"]
    for step in STEPS:
        e = state["steps"].get(step, {"status": "-", "seconds": 0})
        note = e.get("reason") or e.get("summary") or (e.get("tail") or [""])[-1]
        lines.append(f"{step:<8} {e['status']:<8} {e['seconds']:>6}  {str(note)[:90]}")
    lines += _bench_lines(results)
    lines.append(f"{'target':<78} {'value':>9} {'limit':>9}  met")
    for t in state["targets"]:
        limit = f"{'>=' if t['at_least'] else '<='}{_fmt(t['limit'], t['unit'])}"
        met = "-" if t["met"] is None else ("yes" if t["met"] else "NO")
        lines.append(f"{t['target'][:78]:<78} {_fmt(t['value'], t['unit']):>9} {limit:>9}  {met}")
    if env.get("device"):
        lines += ["README rows:", *state["readme_table"]]
    return "\n".join(lines)


def _bench_lines(results: Path) -> list[str]:
    """The measured rows, compactly: VCI per batch and implementation, lvg-b per case and batch, training."""
    lines = []
    vci = _read(results / "bench_vci_cuda.json")
    if vci:
        lines.append(f"VCI {vci['dtype']} (copy {vci['copy_bandwidth_gbps']:.0f} GB/s): batch impl ms x_floor vs_eager")
        lines += [f"  {r['batch']:>3} {r['impl']:<18} {r['ms']:8.3f} {r['x_floor']:6.2f} "
                  f"{r['speedup_vs_eager_ref']:6.2f}x" for r in vci["rows"]]
    e2e = _read(results / "e2e_cuda.json")
    if e2e:
        lines.append(f"lvg-b (matmul {e2e.get('matmul_tflops') or 0:.0f} TFLOP/s): case batch model_ms device_ms share")
        for r in sorted(e2e["results"], key=lambda r: (r["batch"], r["label"])):
            dev = f"{r['device_ms']['p50']:8.2f}" if r.get("device_ms") else "       -"
            share = f"{r['matmul_fraction']:5.0%}" if r.get("matmul_fraction") else "    -"
            lines.append(f"  {r['label']:<40} {r['batch']:>3} {r['model_ms']['p50']:8.2f} {dev} {share}")
        lines += [f"  skipped: {x['label']}: {x['reason'][:80]}" for x in e2e.get("skipped", [])]
    train = _read(results / "train_step_cuda.json")
    if train:
        lines.append(f"train lvg-b batch {train['batch']} {train['amp']}: {train['step_ms']['p50']:.1f} ms/step, "
                     f"{train['samples_per_s']:.1f} samples/s, peak {train['peak_allocated_mib'] or 0:.0f} MiB, "
                     f"{train.get('matmul_fraction') or 0:.0%} of the matmul rate")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env")
    r = sub.add_parser("record")
    r.add_argument("step")
    r.add_argument("status", choices=["ok", "failed", "timeout", "skipped"])
    r.add_argument("seconds", type=float)
    r.add_argument("--reason", default=None)
    r.add_argument("--rc", type=int, default=None)
    r.add_argument("--limit", type=float, default=None)
    r.add_argument("--log", type=Path, default=None)
    r.add_argument("--offset", type=int, default=0)
    sub.add_parser("summary")
    argv = sys.argv[1:] if argv is None else argv
    command = argv[argv.index("--") + 1:] if "--" in argv else []  # the step's command line, after --
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.cmd == "env":
        state = load(args.out)
        state["env"] = environment()
        save(args.out, state)
        print(state["env"]["skip_reason"] or "")
    elif args.cmd == "record":
        record(args.out, args.step, args.status, args.seconds, reason=args.reason, rc=args.rc, limit=args.limit,
               log=args.log, offset=args.offset, command=command)
    else:
        print(summary(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
