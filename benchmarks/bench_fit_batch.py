"""Can a variant fit one fixed batch? A capacity check of the model at its patch size, apart from learning.

    python benchmarks/bench_fit_batch.py --data data/synth-train [--init RUN/last.safetensors] \
        [--variant lvg-s] [--steps 150] [--lr 1e-3] [--batch-size 12] [--out benchmarks/results] [--name NAME]

Takes ``--batch-size`` single-target sentences of the synthetic dataset's ``refcoco-synth`` train split
(the same ones for a given ``--seed``), no augmentation, and trains on that one batch alone with AdamW
and the training losses (contrastive weight 0.01, as the lvg-s configs), from scratch or from ``--init``'s
weights. Every ``--every`` steps it records the Dice loss and the IoU of the thresholded probability
map (the model's ``mask_threshold``) with the target at the map's scale (1/4 or 1/2), in eval mode.

An IoU that climbs towards 1 says the encoder and pixel decoder can express those masks and bind those
sentences at this patch size, so a low IoU over a whole dataset is a matter of learning (data, steps,
schedule), not of the architecture's resolution. Writes ``fit_batch_<name>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _results import write_result

from lvg.modeling import build_model, load_weights
from lvg.train.data import open_dataset
from lvg.train.losses import grounding_loss
from lvg.train.metrics import mask_iou
from lvg.train.run_data import tokenizer_for_checkpoint
from lvg.train.torch_data import GroundingDataset


def batch_iou(prob: torch.Tensor, target: torch.Tensor, threshold: float) -> float:
    """Mean over the batch of the RIS IoU of ``prob > threshold`` with ``target > 0.5``; ``(B, h, w)`` each."""
    pred, gt = (prob > threshold).numpy(), (target > 0.5).numpy()
    return float(np.mean([mask_iou(p, g) for p, g in zip(pred, gt)]))


def run(variant: str, data: Path, init: Path | None, *, steps: int, lr: float, batch_size: int, every: int,
        seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = build_model(variant)
    if init is not None:
        load_weights(model, init)
    cfg = model.cfg
    tok = tokenizer_for_checkpoint(init, str(data), cfg)
    source = open_dataset(data / "refcoco-synth", split="train")
    dataset = GroundingDataset.for_model(source, cfg, tokenizer=tok, train=False)
    if len(dataset) < batch_size:
        raise SystemExit(f"error: {data} has {len(dataset)} training sentences, fewer than --batch-size {batch_size}")
    picked = np.random.default_rng(seed).choice(len(dataset), size=batch_size, replace=False)
    items = [dataset[int(i)] for i in picked]
    batch = {k: torch.stack([torch.as_tensor(it[k]) for it in items])
             for k in ("image", "text_ids", "text_mask", "target", "no_target")}
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    def record(step: int, dice: float) -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            prob = model(batch["image"], batch["text_ids"], batch["text_mask"])["prob"]
        model.train()
        return {"step": step, "dice_loss": dice, "IoU": batch_iou(prob, batch["target"], cfg.preprocess.mask_threshold)}

    rows = []
    start = time.perf_counter()
    model.train()
    for step in range(steps + 1):
        out = model(batch["image"], batch["text_ids"], batch["text_mask"])
        parts = grounding_loss(out, batch["target"], batch["no_target"], contrastive=0.01)
        if step % every == 0 or step == steps:
            rows.append(record(step, float(parts["dice"].detach())))
        if step == steps:
            break
        opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        opt.step()
    return {"variant": cfg.name, "start": str(init) if init else "scratch", "steps": steps, "lr": lr,
            "batch_size": batch_size, "seed": seed, "seconds": round(time.perf_counter() - start, 1),
            "sentences": [dataset.plan(int(i))[1] for i in picked], "curve": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="A dataset directory made by lvg data synth.")
    parser.add_argument("--variant", default="lvg-s")
    parser.add_argument("--init", type=Path, default=None, help="Start from this checkpoint (default: scratch).")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--every", type=int, default=25, help="Record every this many steps.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default=None, help="Result name (default: VARIANT-scratch or VARIANT-init).")
    args = parser.parse_args()

    result = run(args.variant, args.data, args.init, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                 every=max(1, args.every), seed=args.seed)
    name = args.name or f"{args.variant}-{'init' if args.init else 'scratch'}"
    result.update({"data": str(args.data), "threads": torch.get_num_threads()})
    print(f"{result['variant']} from {result['start']} on one batch of {args.batch_size} ({args.data}), lr {args.lr}:")
    print(f"{'step':>5} {'Dice loss':>10} {'IoU':>6}")
    for row in result["curve"]:
        print(f"{row['step']:>5} {row['dice_loss']:>10.3f} {row['IoU']:>6.3f}")
    write_result(result, args.out, f"fit_batch_{name}.json")


if __name__ == "__main__":
    main()
