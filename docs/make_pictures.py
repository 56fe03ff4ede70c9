"""Regenerate the README's pictures from the bundled model (run again whenever the model or the overlay changes).

    python docs/make_pictures.py [--model lvg/assets/default/model.onnx]

Each picture is what ``lvg infer examples/shapes.jpg TEXT --task TASK --out docs/NAME.png`` writes. The
attention maps (``docs/attention_maps.png``) need the PyTorch checkpoint and are made by ``lvg infer ...
--model run/last.safetensors --attention docs/attention_maps.png``, not here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lvg.runtime.grounder import Grounder

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "shapes.jpg"

#: (file, text, task): the README's tables, left to right.
PICTURES = (
    ("ris_big_red.png", "the big red shape", "ris"),
    ("gres_all_stars.png", "all the stars", "gres"),
    ("gres_no_target.png", "the yellow square", "gres"),
    ("ris_position.png", "the red shape at the bottom", "ris"),
    ("ris_relation.png", "the orange star above the dotted star", "ris"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model file (default: the bundled model)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args()
    g = Grounder.load(args.model, device="cpu")
    for name, text, task in PICTURES:
        r = g.predict(EXAMPLE, text, task=task)
        r.save_overlay(args.out / name)
        print(f"{name}: {r!r}")


if __name__ == "__main__":
    main()
