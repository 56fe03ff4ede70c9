"""What the checkpoint diagnostics on `lvg data synth` data (``bench_synth_kinds.py``,
``bench_position_probe.py``, ``bench_patch_probe.py``, ...) share: their common arguments, the checkpoint with
a split's sentences, one batched forward pass, what the pixel decoder reads during it, and where the result is
written."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _results import write_result

from lvg.modeling import load_checkpoint
from lvg.train.data import ReferSource, open_dataset
from lvg.train.run_data import tokenizer_for_checkpoint
from lvg.train.torch_data import GroundingDataset


def arguments(doc: str) -> argparse.ArgumentParser:
    """A parser with ``--ckpt --data --split --batch-size --out --name``; each bench adds its own."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="Checkpoint (.safetensors).")
    parser.add_argument("--data", type=Path, required=True, help="A dataset directory made by lvg data synth.")
    parser.add_argument("--split", default="val")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default=None, help="Result name (default: the checkpoint's run folder).")
    return parser


@dataclass(frozen=True)
class Opened:
    """A checkpoint's model (eval mode) and a split of the single-target (REFER layout) sentences, read with
    the checkpoint's own tokenizer."""

    model: Any
    source: ReferSource
    dataset: GroundingDataset


def open_checkpoint(ckpt: Path, data: Path, split: str) -> Opened:
    model = load_checkpoint(ckpt).eval()
    tok = tokenizer_for_checkpoint(ckpt, str(data), model.cfg)
    source = open_dataset(data / "refcoco-synth", split=split)
    return Opened(model, source, GroundingDataset.for_model(source, model.cfg, tokenizer=tok, train=False))


def forward(model: Any, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """The model's outputs for dataset items, as one batch, without gradients."""
    with torch.no_grad():
        return model(torch.stack([torch.as_tensor(it["image"]) for it in items]),  # (B, 3, S, S)
                     torch.stack([torch.as_tensor(it["text_ids"]) for it in items]),  # (B, L)
                     torch.stack([torch.as_tensor(it["text_mask"]) for it in items]))  # (B, L)


#: The key :func:`recorded_features` files ``F^V`` under.
FV = "F^V (1/8 scale)"


@contextmanager
def recorded_features(model: Any) -> Iterator[dict[str, list[torch.Tensor]]]:
    """While open, every forward pass of ``model`` appends what its pixel decoder reads: each pyramid level's
    patch tokens ``(B, n, d)`` (row-major over the patch grid) under ``"encoder level k (layer L)"``, and
    ``F^V`` at 1/8 scale ``(B, c, H/8, W/8)`` (before the folded last step and the image stem; with
    ``head.shape_branch``, the branch's features included) under :data:`FV`."""
    decoder = model.pixel_decoder
    features = decoder.features
    captured: dict[str, list[torch.Tensor]] = {}

    def recording(levels: list[torch.Tensor], grid: torch.Tensor | None = None) -> torch.Tensor:
        for k, level in enumerate(levels):
            captured.setdefault(f"encoder level {k} (layer {model.cfg.head.pyramid_layers[k]})", []).append(level)
        out = features(levels, grid)
        captured.setdefault(FV, []).append(out)
        return out

    decoder.features = recording  # an instance attribute over the method, only while open
    try:
        yield captured
    finally:
        del decoder.features  # the class's method again


def write(result: dict[str, Any], args: argparse.Namespace, prefix: str) -> Path:
    """Record the run's inputs in ``result`` and write it as ``<out>/<prefix>_<name>.json``."""
    result.update({"checkpoint": str(args.ckpt), "data": str(args.data), "split": args.split})
    name = args.name or args.ckpt.resolve().parent.name
    return write_result(result, args.out, f"{prefix}_{name}.json")
