"""Parameters and GFLOPs of every variant and of the paper's ablation rows (Tables 5 and 10).

    python benchmarks/bench_flops.py [--out benchmarks/results]

Counts run on PyTorch's meta device (no weights allocated), so the whole table takes seconds. FLOPs are
2 per multiply-add with attention counted; "encoder" is BEiT-3 + latent modules, "total" adds the heads.
Writes ``flops.json`` and ``flops.md`` into the output folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
from pathlib import Path

import torch

from lvg.config import LatentConfig, get_config, list_variants
from lvg.modeling.cost import count_flops

# (label, latent config, paper params M, paper GFLOPs); None = the paper gives no number.
TABLE10 = [
    ("No Latent Exps", LatentConfig(enabled=False), 255, 195),
    ("+ Latent Exps", LatentConfig(subject_distributor=False, concept_injector=False), 266, 197),
    ("+ Latent Exps + SD", LatentConfig(concept_injector=False), 266, 197),
    ("+ Latent Exps + VCI", LatentConfig(subject_distributor=False), 267, 198),
    ("+ Latent Exps + SD + VCI", LatentConfig(), 267, 198),
]
TABLE5 = [
    ("N=1 {4}", LatentConfig(lengths=(4,), dropout=(0.2,)), None, 197),
    ("N=1 {10}", LatentConfig(lengths=(10,), dropout=(0.2,)), None, 198),
    ("N=2 {4,4}", LatentConfig(lengths=(4, 4)), None, 198),
    ("N=2 {4,10}", LatentConfig(lengths=(4, 10)), None, 198),
    ("N=2 {6,14}", LatentConfig(lengths=(6, 14)), None, 199),
    ("N=3 {4,4,4}", LatentConfig(lengths=(4, 4, 4), dropout=(0.2, 0.15, 0.15)), None, 199),
    ("N=3 {4,10,16}", LatentConfig(lengths=(4, 10, 16), dropout=(0.2, 0.15, 0.15)), None, 200),
]


def _row(label: str, cfg, paper_params, paper_gflops) -> dict:
    r = count_flops(cfg)
    enc = (r.flops["backbone"] + r.flops["latent_expressions"]) / 1e9
    return {
        "row": label,
        "params_m": round(r.total_params / 1e6, 2),
        "paper_params_m": paper_params,
        "encoder_gflops": round(enc, 2),
        "total_gflops": round(r.total_gflops, 2),
        "paper_gflops": paper_gflops,
        "encoder_vs_paper": round(enc / paper_gflops, 3) if paper_gflops else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    from lvg._progress import progress

    base = get_config("lvg-b")
    jobs = [("variant", v, get_config(v), None, None) for v in list_variants()]
    jobs += [("table10", label, base.replace(name=label, latent=lat), p, g) for label, lat, p, g in TABLE10]
    jobs += [("table5", label, base.replace(name=label, latent=lat), p, g) for label, lat, p, g in TABLE5]
    rows: dict[str, list[dict]] = {"variant": [], "table10": [], "table5": []}
    for group, label, cfg, p, g in progress(jobs, desc="counting", disable=False):
        rows[group].append(_row(label, cfg, p, g))

    result = {
        "date": dt.date.today().isoformat(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "convention": "GFLOPs: 1 multiply-add = 2 FLOPs, attention matmuls counted, batch 1, 480x480, text 40",
        **rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "flops.json").write_text(json.dumps(result, indent=2))
    lines = [f"# Parameters and GFLOPs ({result['date']}, torch {result['torch']})", "", result["convention"], ""]
    head = "| row | params (M) | paper params (M) | encoder GFLOPs | total GFLOPs | paper GFLOPs | encoder / paper |"
    for group, title in (("variant", "Variants"), ("table10", "Table 10"), ("table5", "Table 5")):
        lines += [f"## {title}", "", head, "|" + "---|" * 7]
        for r in rows[group]:
            cells = [r["row"], r["params_m"], r["paper_params_m"], r["encoder_gflops"], r["total_gflops"],
                     r["paper_gflops"], r["encoder_vs_paper"]]
            lines.append("| " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
        lines.append("")
    text = "\n".join(lines)
    (args.out / "flops.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
