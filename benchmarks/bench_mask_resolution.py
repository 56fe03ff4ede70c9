"""What a coarser mask map costs a checkpoint's RIS scores on `lvg data synth` data, its grounding unchanged.

    python benchmarks/bench_mask_resolution.py --ckpt RUN/last.safetensors --data data/synth-heldout \
        [--sides 80,96] [--max-sentences 800] [--out benchmarks/results] [--name NAME]

Each probability map (``prob_size`` square: S/4, or S/2 at ``map_stride`` 2) is area-reduced to ``side x side``
and brought back bilinearly before the runtime's postprocessing and `lvg eval`'s metrics (the same sentences as
`lvg eval --task ris --max-sentences N`): the scores of a model that grounds exactly as this one but draws its
masks at that resolution, e.g. side 80 for a 320 input against 480. The first row (``model``) is the map as it is.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from _synth_checkpoint import arguments, open_checkpoint, write

from lvg.modeling.runner import ArrayRunner
from lvg.train.evaluate import evaluate

METRICS = ("mIoU", "oIoU", "acc@0.5", "prec@0.5", "prec@0.9")


class ReducedMaps:
    """An array model whose probability maps pass through ``side x side`` on their way out."""

    def __init__(self, inner: Any, side: int) -> None:
        self.inner, self.side = inner, side
        self.config, self.supports_expressions = inner.config, False

    def run_arrays(self, images: np.ndarray, text_ids: np.ndarray, text_mask: np.ndarray, **kwargs: Any) -> Any:
        out = self.inner.run_arrays(images, text_ids, text_mask, **kwargs)
        prob = torch.from_numpy(np.ascontiguousarray(out.prob, dtype=np.float32))[:, None]  # (B, 1, s, s)
        s = prob.shape[-1]
        # Area reduction is what a map predicted at the lower resolution can at best hold of this one.
        small = F.adaptive_avg_pool2d(prob, self.side)  # (B, 1, side, side)
        back = F.interpolate(small, size=(s, s), mode="bilinear", align_corners=False)  # (B, 1, s, s)
        return dataclasses.replace(out, prob=back[:, 0].numpy())


def run(ckpt: Any, data: Any, split: str, sides: list[int], max_sentences: int, batch_size: int) -> dict[str, Any]:
    opened = open_checkpoint(ckpt, data, split)
    runner = ArrayRunner(opened.model)
    rows = {}
    for side in [None, *sides]:  # None: the map as the model makes it
        model = runner if side is None else ReducedMaps(runner, side)
        r = evaluate(model, opened.source, split, opened.dataset.tokenizer, task="ris", batch_size=batch_size,
                     max_sentences=max_sentences, per_expression=False)
        rows["model" if side is None else str(side)] = {"n": r["n"], **{k: r[k] for k in METRICS}}
    return {"variant": opened.model.cfg.name, "map_side": opened.model.cfg.prob_size, "sides": rows}


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--sides", default="80,96", help="Comma-separated map sides to reduce to.")
    parser.add_argument("--max-sentences", type=int, default=800, help="Evenly spread subset (0: all).")
    args = parser.parse_args()
    try:
        sides = [int(x) for x in args.sides.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"error: --sides {args.sides!r}: expected comma-separated integers") from None
    if not sides or min(sides) < 1:
        raise SystemExit(f"error: --sides {args.sides!r}: expected positive integers")
    result = run(args.ckpt, args.data, args.split, sides, args.max_sentences, args.batch_size)
    print(f"{result['variant']} on {args.data} ({args.split}), its map {result['map_side']}x{result['map_side']}:")
    print(f"{'map side':>8} {'n':>5} " + " ".join(f"{k:>9}" for k in METRICS))
    for side, row in result["sides"].items():
        print(f"{side:>8} {row['n']:>5} " + " ".join(f"{row[k]:>9.3f}" for k in METRICS))
    write(result, args, "mask_resolution")


if __name__ == "__main__":
    main()
