"""Which region's box answers REC: REC Acc@0.5 of a checkpoint under several rules for the main region.

    python benchmarks/bench_box_rule.py --ckpt RUN/last.safetensors --data data/synth-heldout \
        [--sentences 800] [--out benchmarks/results] [--name NAME]

A thresholded map often has more than one region: the target and a fainter one on a distractor, or the target
split in two. ``lvg infer`` and ``lvg eval --task rec`` answer with the box of one region (the main region,
:func:`lvg.core.regions.main_first`: the one holding the map's highest probability). This bench scores the
same maps (the sentences ``lvg eval --max-sentences`` picks, in the model's precision) with the box of the
region chosen by each rule: ``peak`` (the rule in use), ``largest`` (the rule before it), ``mean`` (the
highest mean probability) and ``mass`` (the most probability: area times mean), and counts the maps with
more than one region. Writes ``box_rule_<name>.json`` and prints the table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _synth_checkpoint import arguments, forward, open_checkpoint, write

from lvg.core.preprocess import letterbox_geometry, unletterbox
from lvg.core.regions import Region, find_regions, main_first
from lvg.train.evaluate import select_sentences
from lvg.train.metrics import box_iou

#: Rule name -> the main region among a map's regions (largest first, specks dropped).
RULES: dict[str, Callable[[list[Region]], Region]] = {
    "peak": lambda rs: main_first(rs)[0],  # the rule lvg answers with
    "largest": lambda rs: rs[0],
    "mean": lambda rs: max(rs, key=lambda r: round(r.score, 6)),
    "mass": lambda rs: max(rs, key=lambda r: r.score * r.area),
}


def run(ckpt: Path, data: Path, split: str, sentences: int, batch_size: int) -> dict[str, Any]:
    opened = open_checkpoint(ckpt, data, split)
    pre = opened.model.cfg.preprocess
    picked = select_sentences(len(opened.dataset), sentences)
    hits, multi, n = dict.fromkeys(RULES, 0), 0, 0
    for start in range(0, len(picked), batch_size):
        batch = picked[start:start + batch_size]
        out = forward(opened.model, [opened.dataset[i] for i in batch])
        for j, i in enumerate(batch):
            sample = opened.source.samples[opened.dataset.plan(i)[0]]
            lb = letterbox_geometry(sample.width, sample.height, pre.size)
            # As lvg.core.postprocess does, once: the map at the image's size, thresholded, its regions.
            prob = unletterbox(out["prob"][j].float().numpy(), lb)  # (H, W)
            regions = find_regions(prob > np.float32(pre.mask_threshold), prob)  # largest first
            gt = opened.source.box(sample)
            n += 1
            if not regions:
                continue
            multi += len(regions) > 1
            for name, rule in RULES.items():
                hits[name] += box_iou(rule(regions).box, gt) >= 0.5
    return {"variant": opened.model.cfg.name, "sentences": n, "multi_region": multi,
            "acc@0.5": {name: hits[name] / max(n, 1) for name in RULES}}


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--sentences", type=int, default=800, help="Sentences to score (0: all).")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    result = run(args.ckpt, args.data, args.split, args.sentences, args.batch_size)
    print(f"{result['variant']} on {args.data} ({args.split}, {result['sentences']} sentences, "
          f"{result['multi_region']} maps with more than one region)")
    print(f"{'main region':<12} {'REC Acc@0.5':>12}")
    for name, acc in result["acc@0.5"].items():
        print(f"{name:<12} {acc:>12.4f}")
    write(result, args, "box_rule")


if __name__ == "__main__":
    main()
