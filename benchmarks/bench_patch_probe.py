"""What the patch tokens know about the object they lie on: linear probes of its shape, colour, size and
texture, and of object vs background, on each encoder level and on the pixel decoder's ``F^V``.

    python benchmarks/bench_patch_probe.py --ckpt RUN/last.safetensors --data data/synth-heldout \
        [--images 200] [--out benchmarks/results] [--name NAME]

The synthetic models' wrong picks mostly misread the shape word ("a triangle for a star",
``bench_synth_kinds.py``). Either the vision tokens do not hold the shape of the object they lie on, or they
do and the expression's embedding does not select it. This bench runs the model on one sentence per image
(each image's first, unmasked), labels each patch with the attributes of the object covering most of it (the
pretraining stage's labels, :class:`lvg.train.pretrain.PretrainDataset`; for the attributes, patches on no
object are left out), fits a ridge classifier (one-hot targets, argmax) from each encoder level's tokens, and
from the pixel decoder's 1/8-scale features averaged over each patch's cells (``F^V`` before the image stem's
features join it at 1/4 and 1/2 scale, adding each pixel's own colour) and from the whole ``F^V`` at the map's
scale averaged the same way (what an expression's embedding is dotted with), on the first half of the images and
reports its accuracy on the second half, against the most frequent label's share there (a probe with nothing
to read can score below it: the halves' label shares differ). A last row probes each patch's own pixels (8 x 8
per patch) as a control: what one patch shows without context. A model with a shape branch gets a row for its
patch-grid features too. For a run trained with ``loss_patch_shape``, the shape classifier it
trained beside the model is scored on all the images too, on the features it was trained on
(``patch_shape_from``). Writes
``patch_probe_<name>.json`` and prints the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from _synth_checkpoint import FV, arguments, forward, open_checkpoint, recorded_features, write

from lvg.modeling.checkpoint import read_checkpoint_tensors
from lvg.train.patch_labels import ATTRIBUTES, IGNORE
from lvg.train.pretrain import PretrainDataset
from lvg.train.sampling import Planned
from lvg.train.state import read_train_header
from lvg.train.words import WordsNet

RIDGE = 1.0  # on standardised features: only keeps the solve stable
PER_PATCH = "F^V (1/8 scale, per patch)"
PIXELS = "pixels (8x8 per patch)"
MAP = "F^V (map scale, per patch)"
BRANCH = "shape branch (patch grid)"


def probe_accuracy(features: np.ndarray, labels: np.ndarray, classes: int) -> tuple[float, float]:
    """Held-out accuracy of a ridge classifier ``features (N, d) -> labels (N,)`` in ``0..classes-1``, fitted
    on the first half of the rows and scored on the second, and the most frequent label's share there."""
    half = len(features) // 2
    mu, sd = features[:half].mean(0), features[:half].std(0) + 1e-6
    a = np.c_[(features - mu) / sd, np.ones(len(features))]  # (N, d + 1) standardised, with a bias column
    onehot = np.eye(classes)[labels]  # (N, classes)
    coef = np.linalg.solve(a[:half].T @ a[:half] + RIDGE * np.eye(a.shape[1]), a[:half].T @ onehot[:half])
    accuracy = float(((a[half:] @ coef).argmax(1) == labels[half:]).mean())
    majority = float(np.bincount(labels[half:], minlength=classes).max() / max(1, len(labels) - half))
    return accuracy, majority


def patch_pixels(image: torch.Tensor, grid: int) -> torch.Tensor:
    """The control row: each patch's own pixels, area-averaged to 8 x 8 (192 values, the tokens' width in
    lvg-s), what the patch embedding reads. ``(B, 3, S, S)`` -> ``(B, g*g, 3*8*8)``."""
    small = F.adaptive_avg_pool2d(image, grid * 8)  # (B, 3, 8g, 8g)
    b = small.shape[0]
    cells = small.reshape(b, 3, grid, 8, grid, 8).permute(0, 2, 4, 1, 3, 5)  # (B, g, g, 3, 8, 8)
    return cells.reshape(b, grid * grid, 3 * 64)  # row-major over the patch grid, as the tokens


def map_features(model: Any, captured: dict[str, list[torch.Tensor]], image: torch.Tensor, grid: int
                 ) -> torch.Tensor:
    """The whole ``F^V`` of the last batch (its ``image (B, 3, S, S)``), what each expression's embedding is
    dotted with (the image stem's features included), averaged over each patch's cells:
    ``(B, E, H/m, W/m)`` -> ``(B, g*g, E)``."""
    with torch.inference_mode():
        fmap = model.pixel_decoder.map_from_features(captured[FV][-1], image)  # (B, E, H/m, W/m)
    return F.adaptive_avg_pool2d(fmap.float(), grid).flatten(2).transpose(1, 2)  # row-major, as the tokens


def run(ckpt: Path, data: Path, split: str, images: int, batch_size: int) -> dict[str, Any]:
    opened = open_checkpoint(ckpt, data, split)
    model, source, grid = opened.model, opened.source, opened.model.cfg.encoder.grid
    labelled = PretrainDataset(source, source.instances, model_cfg=model.cfg, tokenizer=opened.dataset.tokenizer,
                               seed=0, mlm_probability=0.0)
    n = min(images, len(source.samples))
    labels, pixels, full, tokens, branch, own = [], [], [], [], [], []
    with recorded_features(model) as captured:
        for start in range(0, n, batch_size):
            items = [labelled[Planned(i, 0, False, False, i)] for i in range(start, min(n, start + batch_size))]
            for it in items:  # the labelled items hide one word as <unk> (masked-token targets): put it back
                it["text_ids"] = torch.where(it["mlm_target"] != IGNORE, it["mlm_target"], it["text_ids"])
            out = forward(model, items)
            tokens.append(out["patch_tokens"].float())  # (B, n, d): the last layer's
            if "shape_grid" in out:
                branch.append(out["shape_grid"].float())  # (B, n, w)
            if "patch_shape_logits" in out:  # the shape match's classifier, a part of the model
                own.append(out["patch_shape_logits"].float())  # (B, n, S)
            image = torch.stack([torch.as_tensor(it["image"]) for it in items]).float()  # (B, 3, S, S)
            full.append(map_features(model, captured, image, grid))
            pixels.append(patch_pixels(image, grid))
            labels.append(torch.stack([it["patch_attributes"] for it in items]))  # (B, n, 4): 0 = no object
    # F^V's cells averaged over each patch: (B, c, H/8, W/8) -> (B, c, g, g) -> (B, n, c)
    captured[PER_PATCH] = [F.adaptive_avg_pool2d(m.float(), grid).flatten(2).transpose(1, 2) for m in captured.pop(FV)]
    captured[MAP] = full
    captured[PIXELS] = pixels
    if branch:
        captured[BRANCH] = branch
    label = torch.cat(labels).reshape(-1, len(ATTRIBUTES)).numpy()  # (N * n, 4)
    on_object = label[:, 0] > 0
    rows: dict[str, dict[str, Any]] = {}
    for name, parts in captured.items():
        feats = torch.cat(parts).float().reshape(-1, parts[0].shape[-1]).numpy()  # (N * n, d)
        row: dict[str, Any] = {"dims": int(feats.shape[1])}
        for a, (attribute, vocab) in enumerate(ATTRIBUTES):
            accuracy, majority = probe_accuracy(feats[on_object], label[on_object, a] - 1, len(vocab))
            row[attribute] = {"accuracy": accuracy, "majority": majority}
        accuracy, majority = probe_accuracy(feats, on_object.astype(np.int64), 2)
        row["object"] = {"accuracy": accuracy, "majority": majority}
        rows[name] = row
    features = {"tokens": torch.cat(tokens), **({"branch": torch.cat(branch)} if branch else {})}
    trained = trained_classifier(ckpt, features, label, on_object, torch.cat(own) if own else None)
    return {"variant": model.cfg.name, "images": n, "patches": int(len(label)),
            "patches_on_objects": int(on_object.sum()), "probes": rows, "trained_shape_classifier": trained}


def trained_classifier(ckpt: Path, features: dict[str, torch.Tensor], label: np.ndarray, on_object: np.ndarray,
                       model_logits: torch.Tensor | None = None) -> dict[str, Any] | None:
    """The accuracy on these (held-out) images of the shape classifier a ``loss_patch_shape`` run trained
    beside the model, and the most frequent shape's share, over all object patches and per object size;
    None when the checkpoint holds no such classifier. ``features``: ``"tokens"`` ``(N, n, d)`` and, for a
    model with a shape branch, ``"branch"`` ``(N, n, w)`` (the run's ``patch_shape_from`` picks one);
    ``label (N * n, 4)`` (the patch attributes, 0 = no object), ``on_object`` ``(N * n,)``. A model with the
    shape match (``HeadConfig.shape_match``) holds that classifier itself: ``model_logits`` ``(N, n, shapes)``,
    its outputs on the branch's features, are scored instead."""
    if model_logits is not None:
        source, logits = "branch", model_logits
    else:
        key = WordsNet.checkpoint_prefix + "patch_shape_classifier."
        heads = read_checkpoint_tensors(ckpt, prefix=key)  # these two tensors, not the optimizer state beside them
        if key + "weight" not in heads:
            return None
        source = read_train_header(ckpt)[2].patch_shape_from
        logits = features[source] @ heads[key + "weight"].float().T + heads[key + "bias"].float()  # (N, n, shapes)
    right = logits.argmax(-1).reshape(-1).numpy() == label[:, 0] - 1  # (N * n,)
    sizes = dict(ATTRIBUTES)["size"]
    out: dict[str, Any] = {"features": source, "accuracy": float(right[on_object].mean()),
                           "majority": float(np.bincount(label[on_object, 0]).max() / on_object.sum())}
    for k, size in enumerate(sizes, start=1):
        chosen = on_object & (label[:, 2] == k)
        out[f"accuracy_{size}"] = float(right[chosen].mean()) if chosen.any() else None
    return out


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--images", type=int, default=200, help="Images to run (one sentence each).")
    args = parser.parse_args()
    result = run(args.ckpt, args.data, args.split, args.images, args.batch_size)
    print(f"{result['variant']} on {args.data} ({args.split}, {result['images']} images, "
          f"{result['patches_on_objects']} of {result['patches']} patches on objects): held-out accuracy of linear "
          "probes (the most frequent label's share)")
    kinds = [name for name, _ in ATTRIBUTES] + ["object"]
    print(f"{'features':<26} {'dims':>5} " + " ".join(f"{k:>15}" for k in kinds))
    for name, row in result["probes"].items():
        cells = " ".join(f"{row[k]['accuracy']:>7.3f} ({row[k]['majority']:.3f})" for k in kinds)
        print(f"{name:<26} {row['dims']:>5} {cells}")
    if (trained := result["trained_shape_classifier"]) is not None:
        by_size = ", ".join(f"{k[len('accuracy_'):]} {v:.3f}" for k, v in trained.items()
                            if k.startswith("accuracy_") and v is not None)
        where = "the last layer's tokens" if trained["features"] == "tokens" else "the shape branch's features"
        print(f"the run's own shape classifier on {where}: {trained['accuracy']:.3f} "
              f"({trained['majority']:.3f}) on all {result['images']} images ({by_size})")
    write(result, args, "patch_probe")


if __name__ == "__main__":
    main()
