"""Where a model trained on `lvg data synth` data falls short: RIS quality by expression kind.

    python benchmarks/bench_synth_kinds.py --ckpt RUN/last.safetensors --data data/synth-heldout \
        [--max-sentences 400] [--out benchmarks/results] [--name NAME]

On the single-target (REFER layout) split of a synthetic dataset, every sentence is sorted by the kind of
expression the generator made (:func:`lvg.train.synth.expression_kind`: attribute, position, relation)
and scored three ways, all at the original image resolution with the runtime's own postprocessing:

- ``mIoU``: the usual RIS metric against the target.
- ``right object``: the predicted mask overlaps the target more (by IoU) than any other object of the
  scene; ``chance`` is the same rate for a mask that picks one of the scene's objects at random.
- ``best-object IoU``: IoU with whichever object of the scene it matches best, whether or not that is
  the target: how well the masks trace *an* object, apart from choosing the right one.
- ``candidate``: the object the mask matches best fits the sentence's head noun phrase
  (:func:`lvg.train.synth.head_description`: "the leftmost green star" -> the green stars), and
  ``right | candidate`` is how often that candidate is the target; each has its chance beside it (a
  random object of the scene fits the head; a random candidate is the target). For position and relation
  expressions this separates reading the attributes from choosing by position: a high ``candidate`` with
  ``right | candidate`` near its chance says the model finds the green stars but does not compare where
  they are. ``covered``: the fraction of the target's pixels inside the mask, and the same for the other
  candidates, over sentences whose head fits more than one object (equal: the sentence's position or
  relation words change nothing).

Low ``right object`` with fair ``best-object IoU`` says the model segments but does not ground; the
reverse says it grounds but its masks are coarse. Two breakdowns point further:

- ``attribute_words``: the right-object rate of attribute expressions by the attribute words they use
  besides the shape ("the dotted circle" uses texture; "the circle" uses none): which attributes the model
  reads.
- ``iou_by_size``: over right picks of every kind, the IoU with the target by the target's size word: how
  much the masks' resolution costs on small objects; and ``near_edge``, the share of their wrong pixels
  (in the mask but not the target, or the reverse) that lie within 4 pixels of the target's boundary: how
  much of what is left is the edge's precision rather than a wrong region. ``right_object_by_size``: the
  right-object rate of every kind by the target's size word (a large object's inner patches see less of its
  outline than a small one's).
- ``head_misses``: per kind, over the picks of an object that does not fit the head noun phrase (or of
  no object), the share that names no object and the share whose object differs in each attribute the
  head names (a pick can differ in several); ``shape_confusions``, the most frequent (named shape, picked
  shape) pairs among them: which of the words the encoder misreads when it lands on the wrong kind of
  object.
- ``empty_picks``: every sentence answered with an empty mask although it has a target (its kind, text, the
  target's attributes and area in pixels, how many objects fit its head noun phrase, the highest
  probability of its map, letterbox padding included; for a model with the shape match, also that peak with the
  match's term left out): a miss that is a "no target" answer rather than a wrong object.
- ``shape_match`` (a model with ``HeadConfig.shape_match``): how often its two classifiers are right on these
  sentences. ``word``: the sentence's shape word as its word classifier names it, over the sentences whose head
  noun phrase names a shape (and, as ``none``, over those that name none). ``target``: the target's shape as
  the branch's patch classifier names it, its probabilities averaged over the patches the target covers at
  least half of (the most covered one for a target smaller than a patch), by the target's size word.

Writes ``synth_kinds_<name>.json`` and prints the tables.
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from _synth_checkpoint import arguments, forward, open_checkpoint, write

from lvg.core.postprocess import postprocess
from lvg.core.preprocess import letterbox_geometry
from lvg.train.evaluate import select_sentences
from lvg.train.metrics import mask_iou
from lvg.train.refer_files import decode_segmentation
from lvg.train.synth import expression_kind, head_description
from lvg.train.synth.objects import SHAPES

KINDS = ("attribute", "position", "relation")


def _scene_objects(data: Path) -> dict[int, list[dict[str, Any]]]:
    """Every annotation (object) of every image of the REFER layout, by image id; each annotation's
    ``attributes`` gain its ``shape`` (the category name)."""
    instances = json.loads((data / "refcoco-synth" / "instances.json").read_text())
    shapes = {c["id"]: c["name"] for c in instances["categories"]}
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in instances["annotations"]:
        ann["attributes"] = {**ann.get("attributes", {}), "shape": shapes[ann["category_id"]]}
        out[int(ann["image_id"])].append(ann)
    return out


def candidates(text: str, scene: list[dict[str, Any]]) -> list[int]:
    """Indices of the scene's objects that fit the head noun phrase of ``text``."""
    return fitting(head_description(text), scene)


def fitting(head: dict[str, str], scene: list[dict[str, Any]]) -> list[int]:
    """Indices of the scene's objects that have every attribute ``head`` names."""
    return [i for i in range(len(scene)) if not head_miss(head, scene, i)]


def covered(pred: np.ndarray, mask: np.ndarray) -> float:
    """The fraction of ``mask``'s pixels inside the predicted mask."""
    return float((pred & mask).sum() / max(int(mask.sum()), 1))


def _grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by ``radius`` pixels (4-neighbour steps: the pixels within that L1 distance)."""
    out = mask.copy()
    for _ in range(radius):
        step = out.copy()
        step[1:] |= out[:-1]
        step[:-1] |= out[1:]
        step[:, 1:] |= out[:, :-1]
        step[:, :-1] |= out[:, 1:]
        out = step
    return out


def near_edge(pred: np.ndarray, mask: np.ndarray, radius: int = 4) -> float | None:
    """The share of the wrong pixels of ``pred`` against ``mask`` within ``radius`` pixels of ``mask``'s
    boundary (on either side); ``None`` when ``pred`` is exactly ``mask``."""
    wrong = pred ^ mask
    if not wrong.any():
        return None
    band = _grow(mask, radius) & _grow(~mask, radius)  # within radius of both the inside and the outside
    return float((wrong & band).sum() / wrong.sum())


def score_objects(pred: np.ndarray, masks: list[np.ndarray]) -> tuple[int | None, float]:
    """``(picked object, best-object IoU)`` of a predicted mask among a scene's object masks.

    The picked object is the one with the highest IoU (an empty or stray mask, IoU 0 with every object,
    picks none: ``None``).
    """
    ious = [mask_iou(pred, m) for m in masks]
    best = int(np.argmax(ious))
    return (best if ious[best] > 0 else None), ious[best]


def head_miss(head: dict[str, str], scene: list[dict[str, Any]], picked: int | None) -> list[str]:
    """What a pick of ``scene[picked]`` gets wrong about the head noun phrase ``head``: ``["no object"]``
    for no pick, else the named attributes the picked object does not have (empty: it fits the head)."""
    if picked is None:
        return ["no object"]
    return [k for k, v in head.items() if scene[picked]["attributes"].get(k) != v]


def _misses_table(misses: dict[str, dict[str, int]], confusions: dict[tuple[str, str], int]) -> dict[str, Any]:
    """``head_misses`` and ``shape_confusions`` of the result from the counts (see the module docstring)."""
    table = {kind: {"n": m["n"], **{k: v / m["n"] for k, v in sorted(m.items()) if k != "n"}}
             for kind, m in misses.items() if m["n"]}
    top = sorted(confusions.items(), key=lambda kv: -kv[1])[:8]
    return {"head_misses": table, "shape_confusions": [{"named": a, "picked": b, "n": n} for (a, b), n in top]}


def shape_match_reads(out: dict[str, torch.Tensor], items: list[dict[str, Any]], heads: list[dict[str, str]],
                      targets: list[dict[str, str]], grid: int, sums: dict[str, dict[str, float]]) -> None:
    """Add one batch's right / total counts of the shape match's classifiers to ``sums`` (``word:<named>``
    and ``target:<size>`` rows): ``out`` the model's outputs (``shape_word_logits`` ``(B, 1 + S)``,
    ``patch_shape_logits`` ``(B, g*g, S)``), ``heads`` each sentence's head noun phrase, ``targets`` its
    target's attributes. A no-op for a model without the shape match."""
    if "shape_word_logits" not in out:
        return
    named = out["shape_word_logits"].argmax(-1)  # (B,): 0 none, else 1 + the shape
    probs = torch.softmax(out["patch_shape_logits"].float(), -1)  # (B, n, S)
    for j, (item, head, target) in enumerate(zip(items, heads, targets)):
        word = sums["word:" + ("shape" if "shape" in head else "none")]
        word["n"] += 1
        word["right"] += float(int(named[j]) == (1 + SHAPES.index(head["shape"]) if "shape" in head else 0))
        # The target's share of each patch: (S/m, S/m) -> (g, g) -> (n,), raster order as the classifier's
        share = F.adaptive_avg_pool2d(torch.as_tensor(item["target"])[None, None].float(), grid).flatten()
        on = share >= 0.5 if bool((share >= 0.5).any()) else share == share.max()
        row = sums["target:" + target["size"]]
        row["n"] += 1
        row["right"] += float(int(probs[j][on].mean(0).argmax()) == SHAPES.index(target["shape"]))


def without_shape_match(model: Any, dataset: Any, empty: list[dict[str, Any]], batch_size: int) -> None:
    """For a model with the shape match: add to each of ``empty`` (``empty_picks`` entries) its map's highest
    probability with the match's term left out (``max_prob_without_shape_match``, a copy of the model with the
    gain at 0): whether the match emptied the map."""
    if getattr(model, "shape_match", None) is None or not empty:
        return
    bare = copy.deepcopy(model)
    with torch.no_grad():
        bare.shape_match.gain.zero_()
    for start in range(0, len(empty), batch_size):
        chunk = empty[start : start + batch_size]
        probs = forward(bare, [dataset[e["index"]] for e in chunk])["prob"].float()  # (B, S/m, S/m)
        for entry, prob in zip(chunk, probs):
            entry["max_prob_without_shape_match"] = float(prob.max())


def run(ckpt: Path, data: Path, split: str, max_sentences: int, batch_size: int) -> dict[str, Any]:
    opened = open_checkpoint(ckpt, data, split)
    model, source, dataset = opened.model, opened.source, opened.dataset
    pre = model.cfg.preprocess
    objects = _scene_objects(data)
    indices = select_sentences(len(dataset), max_sentences)  # the subset lvg eval --max-sentences scores
    decoded: dict[int, list[np.ndarray]] = {}  # image id -> its objects' masks (several sentences per image)
    sums: dict[str, dict[str, float]] = {k: defaultdict(float) for k in (*KINDS, "all")}
    words: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))  # attribute words -> sums
    sizes: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))  # target size -> sums
    misses: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # kind -> wrong-head counts
    confusions: dict[tuple[str, str], int] = defaultdict(int)  # (named shape, picked shape) -> count
    empty: list[dict[str, Any]] = []  # sentences with a target answered with an empty mask
    reads: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))  # shape match's right counts
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        items = [dataset[i] for i in chunk]
        out = forward(model, items)
        probs = out["prob"].float().numpy()  # (B, S/m, S/m), m the map stride
        heads, targets = [], []  # each sentence's head noun phrase and target's attributes, for the shape match
        for j, (index, item) in enumerate(zip(chunk, items)):
            sample = source.samples[item["sample_index"]]
            text = dataset.plan(index)[1]
            kind = expression_kind(text, len(sample.ann_ids))
            lb = letterbox_geometry(sample.width, sample.height, pre.size)
            pred = postprocess(probs[j], lb, mask_threshold=pre.mask_threshold).mask
            scene = objects[sample.image_id]
            if sample.image_id not in decoded:
                decoded[sample.image_id] = [decode_segmentation(a["segmentation"], sample.height, sample.width)
                                            for a in scene]
            masks = decoded[sample.image_id]
            target = [a["id"] for a in scene].index(sample.ann_ids[0])
            picked, best_iou = score_objects(pred, masks)
            head = head_description(text)
            heads.append(head)
            targets.append(scene[target]["attributes"])
            fits = fitting(head, scene)
            iou = mask_iou(pred, masks[target])
            wrong = head_miss(head, scene, picked)  # empty exactly when picked is in fits
            if picked is None:
                empty.append({"kind": kind, "text": text, "target": scene[target]["attributes"],
                              "target_pixels": int(masks[target].sum()), "fitting_objects": len(fits),
                              "max_prob": float(probs[j].max()), "index": int(index)})
            if wrong:
                misses[kind]["n"] += 1
                for k in wrong:
                    misses[kind][k] += 1
                if "shape" in wrong:  # a real object (no pick is "no object")
                    confusions[(head["shape"], scene[picked]["attributes"]["shape"])] += 1
            if kind == "attribute":
                for used in [k for k in head if k != "shape"] or ["none"]:
                    words[used]["n"] += 1
                    words[used]["right"] += float(picked == target)
            size = sizes[scene[target]["attributes"]["size"]]
            size["sentences"] += 1
            if picked == target:
                size["n"] += 1
                size["iou"] += iou
                edge = near_edge(pred.astype(bool), masks[target].astype(bool))
                size["near_edge_n"] += edge is not None
                size["near_edge"] += edge or 0.0
            for key in (kind, "all"):
                acc = sums[key]
                acc["n"] += 1
                acc["iou"] += iou
                acc["right"] += float(picked == target)
                acc["best_iou"] += best_iou
                acc["chance"] += 1.0 / len(scene)
                acc["candidate"] += float(picked in fits)
                acc["chance_candidate_pick"] += len(fits) / len(scene)
                acc["chance_candidate"] += 1.0 / len(fits)
                if len(fits) > 1:  # how much of each candidate the mask covers: the target vs the others
                    acc["n_ambiguous"] += 1
                    acc["cover_target"] += covered(pred, masks[target])
                    acc["cover_others"] += float(np.mean([covered(pred, masks[k]) for k in fits if k != target]))
        shape_match_reads(out, items, heads, targets, model.cfg.encoder.grid, reads)
    without_shape_match(model, dataset, empty, batch_size)
    rows = {}
    for key, acc in sums.items():
        n = int(acc["n"])
        rows[key] = {"n": n, **({} if n == 0 else {
            "mIoU": acc["iou"] / n, "right_object": acc["right"] / n, "chance": acc["chance"] / n,
            "best_object_IoU": acc["best_iou"] / n, "candidate": acc["candidate"] / n,
            "chance_candidate": acc["chance_candidate_pick"] / n,
            "right_given_candidate": acc["right"] / max(acc["candidate"], 1.0),
            "chance_given_candidate": acc["chance_candidate"] / n,
            "covered_target": acc["cover_target"] / max(acc["n_ambiguous"], 1.0),
            "covered_other_candidates": acc["cover_others"] / max(acc["n_ambiguous"], 1.0)})}
    return {"variant": model.cfg.name, "kinds": rows,
            "attribute_words": {k: {"n": int(v["n"]), "right_object": v["right"] / v["n"]}
                                for k, v in sorted(words.items())},
            "iou_by_size": {k: {"n": int(v["n"]), "IoU": v["iou"] / v["n"],
                                "near_edge": v["near_edge"] / max(v["near_edge_n"], 1.0)}
                            for k, v in sorted(sizes.items()) if v["n"]},
            "right_object_by_size": {k: {"n": int(v["sentences"]), "right_object": v["n"] / v["sentences"]}
                                     for k, v in sorted(sizes.items())},
            **_misses_table(misses, confusions), "empty_picks": empty,
            "shape_match": {k: {"n": int(v["n"]), "right": v["right"] / v["n"]} for k, v in sorted(reads.items())}}


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--max-sentences", type=int, default=400, help="Evenly spread subset (0: all).")
    args = parser.parse_args()
    result = run(args.ckpt, args.data, args.split, args.max_sentences, args.batch_size)
    print(f"{result['variant']} on {args.data} ({args.split}):")
    print(f"{'kind':<10} {'n':>5} {'mIoU':>6} {'right object':>13} {'chance':>7} {'best-object IoU':>16}"
          f" {'candidate (chance)':>19} {'right | candidate (chance)':>27}")
    for kind, row in result["kinds"].items():
        if row["n"]:
            print(f"{kind:<10} {row['n']:>5} {row['mIoU']:>6.3f} {row['right_object']:>13.3f} {row['chance']:>7.3f}"
                  f" {row['best_object_IoU']:>16.3f} {row['candidate']:>10.3f} ({row['chance_candidate']:.3f})"
                  f" {row['right_given_candidate']:>18.3f} ({row['chance_given_candidate']:.3f})")
    print(f"\n{'kind':<10} {'covered: target':>16} {'other candidates':>17}")
    for kind, row in result["kinds"].items():
        if row["n"] and kind != "attribute":
            print(f"{kind:<10} {row['covered_target']:>16.3f} {row['covered_other_candidates']:>17.3f}")
    print(f"\n{'attribute words (besides the shape)':<36} {'n':>5} {'right object':>13}")
    for used, row in result["attribute_words"].items():
        print(f"{used:<36} {row['n']:>5} {row['right_object']:>13.3f}")
    print(f"\n{'right picks: target size':<36} {'n':>5} {'IoU':>13} {'wrong pixels near the edge':>27}")
    for size, row in result["iou_by_size"].items():
        print(f"{size:<36} {row['n']:>5} {row['IoU']:>13.3f} {row['near_edge']:>27.3f}")
    print("right object by target size: " + ", ".join(f"{size} {row['right_object']:.3f} of {row['n']}"
                                                      for size, row in result["right_object_by_size"].items()))
    print(f"\n{'picks off the head noun phrase':<32} {'n':>5}  share differing in (a pick can differ in several)")
    for kind, row in result["head_misses"].items():
        parts = ", ".join(f"{k} {v:.2f}" for k, v in row.items() if k != "n")
        print(f"{kind:<32} {row['n']:>5}  {parts}")
    print("shape confusions (named -> picked): "
          + ", ".join(f"{c['named']} -> {c['picked']} {c['n']}" for c in result["shape_confusions"]))
    empty = result["empty_picks"]
    print(f"empty masks for sentences with a target: {len(empty)}"
          + "".join(f"\n  {e['kind']}: {e['text']!r} (target {e['target_pixels']} px, max prob {e['max_prob']:.1e}"
                    + (f", {e['max_prob_without_shape_match']:.1e} without the shape match"
                       if "max_prob_without_shape_match" in e else "") + ")" for e in empty))
    if result["shape_match"]:
        print("shape match, right: " + ", ".join(f"{k} {v['right']:.3f} of {v['n']}"
                                                  for k, v in result["shape_match"].items()))
    write(result, args, "synth_kinds")


if __name__ == "__main__":
    main()
