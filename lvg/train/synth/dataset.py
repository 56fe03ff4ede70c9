"""Dataset writing: rendered scenes to images, COCO annotations, REFER / gREFER refs and a tokenizer.

Output layout (``generate(out_dir, ...)``)::

    out_dir/images/synth_000001.jpg ...
    out_dir/refcoco-synth/refs(unc).p        REFER pickle (single-target refs)
    out_dir/refcoco-synth/instances.json     COCO annotations, compressed RLE masks
    out_dir/grefcoco-synth/grefs(unc).json   gREFER (single, multi and no-target refs)
    out_dir/grefcoco-synth/instances.json
    out_dir/synthetic.spm                    sentencepiece model trained on every expression
    out_dir/synth.json                       generator version, seed, counts

Every image draws from its own ``numpy.random.default_rng([seed, image_index])``, so the output is a
pure function of the arguments (byte-identical across runs and worker counts; JPEG encoding is
deterministic).
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from lvg.errors import InputError
from lvg.train.synth.language import NO_TARGET_FORMS, NoTargetForms
from lvg.train.synth.objects import SHAPES, Expression, SceneObject
from lvg.train.synth.scene import make_scene

__all__ = ["FORMAT_VERSION", "MIN_VOCAB_SIZE", "SynthSummary", "generate", "rle_encode"]

#: Bumped whenever the generator's output for a given seed changes.
FORMAT_VERSION = 1
#: Smallest tokenizer vocabulary :func:`generate` accepts: sentencepiece needs an id for every character of
#: the expressions before it merges any (24 characters and 4 special ids when every word occurs); checked
#: before a single image is drawn.
MIN_VOCAB_SIZE = 32

_CATEGORY_ID = {s: i + 1 for i, s in enumerate(SHAPES)}


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate` wrote."""

    out_dir: Path
    seed: int
    images: int
    size_range: tuple[int, int]
    splits: dict[str, int]
    refs: int
    ref_sentences: int
    grefs: int
    gref_sentences: int
    multi_target_refs: int
    no_target_refs: int
    tokenizer: Path

    def to_dict(self) -> dict[str, object]:
        return {
            "out_dir": str(self.out_dir),
            "seed": self.seed,
            "images": self.images,
            "size_range": list(self.size_range),
            "splits": dict(self.splits),
            "refs": self.refs,
            "ref_sentences": self.ref_sentences,
            "grefs": self.grefs,
            "gref_sentences": self.gref_sentences,
            "multi_target_refs": self.multi_target_refs,
            "no_target_refs": self.no_target_refs,
            "tokenizer": str(self.tokenizer),
        }


def generate(
    out_dir: str | os.PathLike[str],
    *,
    images: int,
    seed: int,
    size_range: tuple[int, int] = (320, 640),
    vocab_size: int = 400,
    splits: Sequence[tuple[str, float]] | str = (("train", 0.8), ("val", 0.2)),
    image_format: Literal["jpg", "png"] = "jpg",
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
    no_target_forms: NoTargetForms = "plain",
) -> SynthSummary:
    """Write a synthetic dataset of ``images`` scenes to ``out_dir`` (layout in the module docstring).

    Args:
        out_dir: output directory (created; existing files of the same names are replaced).
        images: number of images (>= 1).
        seed: the output is a pure function of the arguments.
        size_range: inclusive range of image width and height in pixels.
        vocab_size: upper bound of the sentencepiece vocabulary trained on all expressions.
        splits: ``(name, fraction)`` pairs (images are assigned to splits, like RefCOCO's unc splits),
            or one split name for every image.
        image_format: ``"jpg"`` (quality 95) or ``"png"`` (lossless).
        workers: rendering processes (1 = in this process); the output does not depend on it.
        progress: called with 1 after each image (for a progress bar).
        no_target_forms: how the no-target expressions are worded (``"plain"``: "the <colour> <shape>";
            ``"varied"``: the noun phrases and positions of target expressions too); the images and every
            other expression are the same either way. Recorded in ``synth.json`` when not ``"plain"``.

    Raises:
        InputError: bad arguments.
    """
    from lvg.core.tokenizer import train_sentencepiece

    lo, hi = _check_arguments(images, size_range, workers, vocab_size, image_format)
    if no_target_forms not in NO_TARGET_FORMS:
        raise InputError(f"no_target_forms must be one of {', '.join(NO_TARGET_FORMS)}, got {no_target_forms!r}")
    out = Path(out_dir)
    image_dir, refer_dir, grefer_dir = out / "images", out / "refcoco-synth", out / "grefcoco-synth"
    for d in (image_dir, refer_dir, grefer_dir):
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create {d}: {exc.strerror or exc}") from None
    split_of = _split_assignment(images, seed, splits)

    annotations = _Annotations(image_format)
    jobs = [(int(seed), index, lo, hi, str(image_dir), image_format, no_target_forms) for index in range(images)]
    for record in _map_records(jobs, workers):
        annotations.add(record, split_of[record.index])
        if progress is not None:
            progress(1)
    annotations.write(refer_dir, grefer_dir)
    tokenizer = train_sentencepiece(annotations.all_text, out / "synthetic.spm", vocab_size=vocab_size, seed=seed)

    split_counts: dict[str, int] = {}
    for s in split_of:
        split_counts[s] = split_counts.get(s, 0) + 1
    summary = SynthSummary(
        out_dir=out,
        seed=int(seed),
        images=images,
        size_range=(lo, hi),
        splits=split_counts,
        refs=len(annotations.refs),
        ref_sentences=sum(len(r["sentences"]) for r in annotations.refs),  # type: ignore[arg-type]
        grefs=len(annotations.grefs),
        gref_sentences=sum(len(r["sentences"]) for r in annotations.grefs),  # type: ignore[arg-type]
        multi_target_refs=annotations.n_multi,
        no_target_refs=annotations.n_none,
        tokenizer=tokenizer,
    )
    meta = {
        "format": "lvg-synth",
        "version": FORMAT_VERSION,
        "seed": int(seed),
        "images": images,
        "size_range": [lo, hi],
        "image_format": image_format,
        "vocab_size": vocab_size,
        "splits": split_counts,
        "datasets": {"refcoco-synth": {"refs": summary.refs, "sentences": summary.ref_sentences},
                     "grefcoco-synth": {"refs": summary.grefs, "sentences": summary.gref_sentences,
                                        "multi_target": summary.multi_target_refs,
                                        "no_target": summary.no_target_refs}},
        "tokenizer": "synthetic.spm",
    }
    if no_target_forms != "plain":  # a plain dataset's synth.json stays byte for byte what it always was
        meta["no_target_forms"] = no_target_forms
    _write_atomic(out / "synth.json", (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    return summary


def _check_arguments(images: int, size_range: tuple[int, int], workers: int, vocab_size: int,
                     image_format: str) -> tuple[int, int]:
    """Refuse bad arguments before a single image is drawn; returns the size range as ints."""
    if images < 1:
        raise InputError(f"--images must be at least 1, got {images}")
    lo, hi = int(size_range[0]), int(size_range[1])
    if lo < 64 or hi < lo:
        raise InputError(f"size_range must satisfy 64 <= min <= max, got {size_range}")
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    if vocab_size < MIN_VOCAB_SIZE:
        raise InputError(f"vocab_size must be at least {MIN_VOCAB_SIZE} (one id per character first), got {vocab_size}")
    if image_format not in ("jpg", "png"):
        raise InputError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    return lo, hi


# --------------------------------------------------------------------------------------------------
# Rendering scenes to image files (in worker processes)


@dataclass(frozen=True)
class _SceneRecord:
    """What the writer needs of one rendered scene (the image itself is already on disk)."""

    index: int
    file_name: str
    width: int
    height: int
    objects: list[SceneObject]
    rles: list[dict[str, object]]
    areas: list[float]
    bboxes: list[list[float]]
    single: dict[int, list[Expression]]
    multi: list[Expression]
    none: list[Expression]


#: What a worker renders: (seed, index, min side, max side, image folder, image format, no-target wording).
_Job = tuple[int, int, int, int, str, str, NoTargetForms]


def _render_record(job: _Job) -> _SceneRecord:
    """Render scene ``index``, write its image, encode its masks (runs in a worker process)."""
    seed, index, lo, hi, image_dir, image_format, forms = job
    scene = make_scene(seed, index, size_range=(lo, hi), no_target_forms=forms)
    file_name = f"synth_{index + 1:06d}.{image_format}"
    pil = Image.fromarray(scene.image, mode="RGB")
    if image_format == "jpg":
        pil.save(Path(image_dir) / file_name, format="JPEG", quality=95)
    else:
        pil.save(Path(image_dir) / file_name, format="PNG")
    return _SceneRecord(
        index=index,
        file_name=file_name,
        width=scene.width,
        height=scene.height,
        objects=scene.objects,
        rles=[rle_encode(m) for m in scene.masks],
        areas=[float(m.sum()) for m in scene.masks],
        bboxes=[_bbox_xywh(m) for m in scene.masks],
        single=scene.single,
        multi=scene.multi,
        none=scene.none,
    )


def _map_records(jobs: list[_Job], workers: int) -> Iterator[_SceneRecord]:
    """Render in order; with ``workers > 1`` in a spawn-started process pool (fork-safe with torch loaded)."""
    if workers <= 1 or len(jobs) < 2:
        for job in jobs:
            yield _render_record(job)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        yield from pool.map(_render_record, jobs, chunksize=8)


# --------------------------------------------------------------------------------------------------
# COCO annotations and REFER / gREFER refs


@dataclass
class _Annotations:
    """The COCO annotations and the refs of every scene added so far, with their running ids (1-based,
    in the order the scenes are added: the ids are part of the output)."""

    image_format: str
    images: list[dict[str, object]] = field(default_factory=list)
    annotations: list[dict[str, object]] = field(default_factory=list)
    refs: list[dict[str, object]] = field(default_factory=list)
    grefs: list[dict[str, object]] = field(default_factory=list)
    all_text: list[str] = field(default_factory=list)
    next_ann: int = 1
    next_ref: int = 1
    next_sent: int = 1
    next_gref: int = 1
    next_gsent: int = 1
    n_multi: int = 0
    n_none: int = 0

    def add(self, record: _SceneRecord, split: str) -> None:
        """Add one scene: its image, its objects' annotations and its refs in both layouts."""
        image_id = record.index + 1
        self.images.append({"id": image_id, "file_name": record.file_name, "height": record.height,
                            "width": record.width})
        ann_ids = self._add_objects(record, image_id)
        for t, exprs in sorted(record.single.items()):
            self._add_single(record, image_id, split, ann_ids[t], record.objects[t], exprs)
        for expr in record.multi:
            self._add_multi(record, image_id, split, ann_ids, expr)
        if record.none:
            self._add_none(record, image_id, split)

    def _add_objects(self, record: _SceneRecord, image_id: int) -> list[int]:
        ann_ids: list[int] = []
        for obj, rle, area, bbox in zip(record.objects, record.rles, record.areas, record.bboxes):
            self.annotations.append({
                "id": self.next_ann,
                "image_id": image_id,
                "category_id": _CATEGORY_ID[obj.shape],
                "segmentation": rle,
                "area": area,
                "bbox": bbox,
                "iscrowd": 0,
                "attributes": {"colour": obj.colour, "size": obj.size, "texture": obj.texture},
            })
            ann_ids.append(self.next_ann)
            self.next_ann += 1
        return ann_ids

    def _add_single(self, record: _SceneRecord, image_id: int, split: str, ann_id: int, obj: SceneObject,
                    exprs: list[Expression]) -> None:
        """One object's expressions: a REFER ref and a gREFER ref with the same sentences."""
        texts = [e.text for e in exprs]
        self.all_text += texts
        sents = [_sentence(s, self.next_sent + k) for k, s in enumerate(texts)]
        gsents = [_sentence(s, self.next_gsent + k) for k, s in enumerate(texts)]
        stem = record.file_name.rsplit(".", 1)[0]
        self.refs.append({
            "ref_id": self.next_ref, "ann_id": ann_id, "image_id": image_id, "split": split,
            "sentences": sents, "sent_ids": [s["sent_id"] for s in sents],
            "category_id": _CATEGORY_ID[obj.shape],
            "file_name": f"{stem}_{ann_id}.{self.image_format}",
        })
        self.grefs.append({
            "ref_id": self.next_gref, "ann_id": [ann_id], "image_id": image_id, "split": split,
            "sentences": gsents, "sent_ids": [s["sent_id"] for s in gsents],
            "category_id": [_CATEGORY_ID[obj.shape]], "no_target": False,
            "file_name": f"{stem}_{ann_id}.{self.image_format}",
        })
        self.next_ref, self.next_gref = self.next_ref + 1, self.next_gref + 1
        self.next_sent, self.next_gsent = self.next_sent + len(texts), self.next_gsent + len(texts)

    def _add_multi(self, record: _SceneRecord, image_id: int, split: str, ann_ids: list[int],
                   expr: Expression) -> None:
        """A multi-target expression: a gREFER ref over several annotations."""
        self.all_text.append(expr.text)
        targets = sorted(expr.targets)
        self.grefs.append({
            "ref_id": self.next_gref, "ann_id": [ann_ids[t] for t in targets], "image_id": image_id,
            "split": split, "sentences": [_sentence(expr.text, self.next_gsent)], "sent_ids": [self.next_gsent],
            "category_id": [_CATEGORY_ID[record.objects[t].shape] for t in targets], "no_target": False,
            "file_name": record.file_name,
        })
        self.next_gref, self.next_gsent, self.n_multi = self.next_gref + 1, self.next_gsent + 1, self.n_multi + 1

    def _add_none(self, record: _SceneRecord, image_id: int, split: str) -> None:
        """The scene's no-target expressions: one gREFER ref with ``ann_id == [-1]``."""
        texts = [e.text for e in record.none]
        self.all_text += texts
        gsents = [_sentence(s, self.next_gsent + k) for k, s in enumerate(texts)]
        self.grefs.append({
            "ref_id": self.next_gref, "ann_id": [-1], "image_id": image_id, "split": split,
            "sentences": gsents, "sent_ids": [s["sent_id"] for s in gsents],
            "category_id": [-1], "no_target": True,
            "file_name": record.file_name,
        })
        self.next_gref, self.next_gsent, self.n_none = self.next_gref + 1, self.next_gsent + len(texts), self.n_none + 1

    def write(self, refer_dir: Path, grefer_dir: Path) -> None:
        """The COCO instances (the same in both layouts), the REFER pickle and the gREFER JSON."""
        categories = [{"id": i, "name": s, "supercategory": "shape"} for s, i in _CATEGORY_ID.items()]
        instances = json.dumps(
            {"info": {"description": "lvg synthetic shapes", "version": FORMAT_VERSION},
             "images": self.images, "annotations": self.annotations, "categories": categories},
            separators=(",", ":"),
        ).encode()
        _write_atomic(refer_dir / "instances.json", instances)
        _write_atomic(grefer_dir / "instances.json", instances)
        # Protocol 2, plain containers only: what REFER's own refs(*.p) files are.
        _write_atomic(refer_dir / "refs(unc).p", pickle.dumps(self.refs, protocol=2))
        _write_atomic(grefer_dir / "grefs(unc).json", json.dumps(self.grefs, separators=(",", ":")).encode())


def _sentence(text: str, sent_id: int) -> dict[str, object]:
    return {"sent": text, "raw": text, "tokens": text.split(), "sent_id": sent_id}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _split_assignment(n: int, seed: int, splits: Sequence[tuple[str, float]] | str) -> list[str]:
    if isinstance(splits, str):
        return [splits] * n
    names = [s for s, _ in splits]
    fracs = np.asarray([float(f) for _, f in splits], dtype=np.float64)
    if len(names) != len(set(names)) or not names:
        raise InputError(f"split names must be distinct and non-empty, got {names}")
    if (fracs < 0).any() or fracs.sum() <= 0:
        raise InputError(f"split fractions must be non-negative with a positive sum, got {fracs.tolist()}")
    bounds = np.rint(np.cumsum(fracs / fracs.sum()) * n).astype(int)  # (k,) cumulative image counts
    order = np.random.default_rng([int(seed), 0x5EED]).permutation(n)
    out = [""] * n
    start = 0
    for name, stop in zip(names, bounds):
        for i in order[start:stop]:
            out[int(i)] = name
        start = stop
    return out


# --------------------------------------------------------------------------------------------------
# COCO RLE (the compressed string form of pycocotools' maskApi ``rleToString``), written without
# pycocotools so generation needs nothing beyond numpy / Pillow.


def rle_encode(mask: np.ndarray) -> dict[str, object]:
    """Compressed COCO RLE of a bool (H, W) mask: ``{"size": [H, W], "counts": str}``.

    Runs alternate 0s and 1s over the column-major (Fortran order) pixels, starting with 0s.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    h, w = m.shape
    flat = m.ravel(order="F")  # COCO runs walk columns first
    if flat.size == 0:
        return {"size": [h, w], "counts": ""}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    chars: list[str] = []
    for i, value in enumerate(counts):
        x = int(value) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as the C code's signed long
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return {"size": [h, w], "counts": "".join(chars)}


def _bbox_xywh(mask: np.ndarray) -> list[float]:
    """COCO box (pixel edges) of a non-empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    x0, y0 = int(cols[0]), int(rows[0])
    return [float(x0), float(y0), float(cols[-1] + 1 - x0), float(rows[-1] + 1 - y0)]
