"""The paper's Table 4 on synthetic data: latent expressions on vs off at an equal budget, from evaluations.

Each arm's run (one per seed) and each start is a folder of evaluation files, as the commands of MODEL_CARD.md
("Reproduce and retrain") write them::

    lvg eval --ckpt RUN/last.safetensors --data data/synth-heldout:refcoco-synth --split val --task ris \\
        --max-sentences 800 --text-swap --json > DIR/ris.json
    lvg eval --ckpt RUN/last.safetensors --data data/synth-heldout --task gres --max-sentences 800 \\
        --json > DIR/gres.json
    lvg eval --ckpt RUN/last.safetensors --data data/synth-train:refcoco-synth --split val --task ris \\
        --max-sentences 800 --json > DIR/val.json
    python benchmarks/bench_synth_kinds.py --ckpt RUN/last.safetensors --data data/synth-heldout --name N --out DIR

Then::

    python benchmarks/table4_synth.py --on DIR_ON_1 DIR_ON_2 --off DIR_OFF_1 DIR_OFF_2 \\
        --start-on DIR --start-off DIR --what "..." --out benchmarks/results/table4_synth_X.json

prints the table (markdown: each arm's runs and mean, on - off per seed and its mean) and writes it as JSON
(``table`` rows with ``on``, ``off``, ``start_on``, ``start_off``, ``on_minus_off``, ``on_minus_off_mean``; ``runs``
every evaluation read, in full). The on and off runs are paired by position: the i-th of each shares a seed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path
from statistics import mean
from typing import Any

from lvg.core.atomic import atomic_output

Evals = dict[str, Any]

#: Table row name -> how to read it from one folder's evaluations.
METRICS: dict[str, Callable[[Evals], float]] = {
    "RIS mIoU": lambda e: e["ris"]["mIoU"],
    "RIS oIoU": lambda e: e["ris"]["oIoU"],
    "RIS Prec@0.5": lambda e: e["ris"]["prec@0.5"],
    "RIS Prec@0.9": lambda e: e["ris"]["prec@0.9"],
    "REC Acc@0.5": lambda e: e["ris"]["acc@0.5"],
    "GRES gIoU": lambda e: e["gres"]["gIoU"],
    "GRES cIoU": lambda e: e["gres"]["cIoU"],
    "GRES N-acc": lambda e: e["gres"]["N-acc"],
    "right object: attribute": lambda e: e["kinds"]["kinds"]["attribute"]["right_object"],
    "right object: position": lambda e: e["kinds"]["kinds"]["position"]["right_object"],
    "right object: relation": lambda e: e["kinds"]["kinds"]["relation"]["right_object"],
    "RIS mIoU with another image's sentence": lambda e: e["ris"]["text_swap"]["mIoU"],
    "validation RIS mIoU (the training generator's seed)": lambda e: e["val"]["mIoU"],
}


def read_evals(folder: Path) -> Evals:
    """A folder's ``ris.json``, ``gres.json``, ``val.json`` and its one ``synth_kinds_*.json``; a missing or
    unreadable file is a one-line ``SystemExit``."""
    out: Evals = {}
    kinds = sorted(folder.glob("synth_kinds_*.json"))
    if len(kinds) != 1:
        raise SystemExit(f"error: {folder} must hold exactly one synth_kinds_*.json, found {len(kinds)}")
    for key, path in (("ris", folder / "ris.json"), ("gres", folder / "gres.json"), ("val", folder / "val.json"),
                      ("kinds", kinds[0])):
        try:
            out[key] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"error: cannot read {path}: {exc}") from None
    return out


def table(on: list[Evals], off: list[Evals], start_on: Evals | None, start_off: Evals | None) -> list[dict]:
    """One row per :data:`METRICS` entry: every run's value, the starts' and on - off per seed and on average."""
    rows = []
    for name, read in METRICS.items():
        try:
            a, b = [read(e) for e in on], [read(e) for e in off]
            starts = {key: [read(e)] for key, e in (("start_on", start_on), ("start_off", start_off)) if e}
        except KeyError as exc:
            raise SystemExit(f"error: an evaluation lacks {exc} (row {name!r}); rerun it as the docstring says") \
                from None
        diff = [x - y for x, y in zip(a, b)]
        rows.append({"metric": name, "on": a, "off": b, **starts, "on_minus_off": diff,
                     "on_minus_off_mean": mean(diff)})
    return rows


def markdown(rows: list[dict]) -> str:
    """The table as the model card shows it."""
    def runs(values: list[float]) -> str:
        return " / ".join(f"{v:.3f}" for v in values) + (f" ({mean(values):.3f})" if len(values) > 1 else "")

    lines = ["| metric | start: on / off | on: runs (mean) | off: runs (mean) | on - off: mean (per seed) |",
             "|---|---|---|---|---|"]
    for r in rows:
        start = " / ".join(f"{r[k][0]:.3f}" for k in ("start_on", "start_off") if k in r) or "-"
        per_seed = ", ".join(f"{d:+.3f}" for d in r["on_minus_off"])
        lines.append(f"| {r['metric']} | {start} | {runs(r['on'])} | {runs(r['off'])} | "
                     f"**{r['on_minus_off_mean']:+.3f}** ({per_seed}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--on", type=Path, nargs="+", required=True, help="latent-on runs' evaluation folders")
    ap.add_argument("--off", type=Path, nargs="+", required=True, help="latent-off runs' folders, same seed order")
    ap.add_argument("--start-on", type=Path, help="evaluations of the weights both arms start from")
    ap.add_argument("--start-off", type=Path, help="evaluations of those weights less the latent modules")
    ap.add_argument("--what", default="", help="what the runs are (recipe, steps, seeds), kept in the JSON")
    ap.add_argument("--out", type=Path, help="JSON file to write")
    args = ap.parse_args(argv)
    if len(args.on) != len(args.off):
        print(f"error: {len(args.on)} on runs against {len(args.off)} off runs; pair them by seed", file=sys.stderr)
        return 2
    on, off = [read_evals(d) for d in args.on], [read_evals(d) for d in args.off]
    start_on = read_evals(args.start_on) if args.start_on else None
    start_off = read_evals(args.start_off) if args.start_off else None
    rows = table(on, off, start_on, start_off)
    print(markdown(rows))
    per_expression = {str(d): e["ris"].get("per_expression") for d, e in zip(args.on, on)}  # Table 11
    if args.out:
        # Every evaluation in full, so a number the table does not show can still be read from the file.
        runs = {"on": dict(zip(map(str, args.on), on)), "off": dict(zip(map(str, args.off), off)),
                "start_on": {str(args.start_on): start_on} if start_on else {},
                "start_off": {str(args.start_off): start_off} if start_off else {}}
        result = {"what": args.what, "date": dt.date.today().isoformat(), "table": rows,
                  "per_expression_ris": per_expression, "runs": runs}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(args.out) as tmp:  # the file appears complete or not at all
            tmp.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
