"""Readers of the REFER (RefCOCO / RefCOCO+ / RefCOCOg) and gREFER (gRefCOCO) dataset formats.

Layouts (SPEC section 4)::

    <root>/<dataset>/refs(<splitBy>).p      REFER: a pickle, a list of ref dicts
    <root>/<dataset>/grefs(<splitBy>).json  gREFER: a JSON list of ref dicts (``grefs(*.p)`` also read)
    <root>/<dataset>/instances.json         COCO: images, annotations (polygons or RLE), categories
    <image_dir>/<file_name>                 images, ``<root>/images`` unless given

A REFER ref: ``{ref_id, ann_id (int), image_id, split, sentences: [{sent, raw, tokens, sent_id}],
category_id, sent_ids, file_name}``. A gREFER ref has ``ann_id`` as a list; ``[-1]`` (or
``no_target: true``) means the expression refers to nothing, and the target mask is the union of the
listed annotations' masks (crowd annotations left out, as ReLA's ``G_REFER.getMaskByRef`` does).

The files themselves are read by :mod:`lvg.train.refer_files` (``refs(*.p)`` with a restricted unpickler).
This module imports no torch; :class:`~lvg.train.torch_data.GroundingDataset` (the torch ``Dataset``)
lives in :mod:`lvg.train.torch_data`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from lvg.errors import InputError
from lvg.train.config import data_parts
from lvg.train.refer_files import decode_segmentation, read_json, read_refs_pickle

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "ReferSample",
    "ReferSource",
    "SYNTH_DATASETS",
    "flip_allowed",
    "load_grefer",
    "load_refer",
    "mentions_colour",
    "open_dataset",
]

#: Sub-directories that :func:`generate <lvg.train.synth.generate>` writes (REFER, gREFER).
SYNTH_DATASETS = ("refcoco-synth", "grefcoco-synth")
SPLIT_BYS = ("unc", "umd", "google")


@dataclass(frozen=True)
class ReferSample:
    """One referred target (a "ref"): an image, its expressions and the annotations they denote.

    ``ann_ids`` is empty exactly when ``no_target`` is True. ``width`` / ``height`` are the image's
    size from ``instances.json`` (the size masks are decoded at).
    """

    ref_id: int
    image_id: int
    image_path: Path
    sentences: tuple[str, ...]
    ann_ids: tuple[int, ...]
    width: int
    height: int
    no_target: bool


# --------------------------------------------------------------------------------------------------
# The source


class ReferSource:
    """The samples of one split of a REFER / gREFER dataset, with their masks and boxes.

    ``samples`` keep the order of the refs file. Refs without sentences are left out (counted in
    ``skipped``). Masks are decoded on demand (nothing is cached, so memory stays flat on RefCOCO).
    ``instances`` is the COCO file the annotations came from (every object of the images, referred or not).
    ``outside_train``: ids of the dataset's images that any of its refs puts in a split other than train
    (what a combined training split leaves out, :mod:`lvg.train.combined`).
    """

    def __init__(
        self,
        *,
        name: str,
        kind: Literal["refer", "grefer"],
        split: str | None,
        samples: list[ReferSample],
        annotations: dict[int, dict[str, Any]],
        image_dir: Path,
        skipped: int = 0,
        instances: Path | None = None,
        outside_train: frozenset[int] = frozenset(),
    ) -> None:
        self.name = name
        self.outside_train = outside_train
        self.instances = instances
        self.kind = kind
        self.split = split
        self.samples = samples
        self.image_dir = image_dir
        self.skipped = skipped
        self._anns = annotations

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"ReferSource({self.name!r}, kind={self.kind!r}, split={self.split!r}, samples={len(self.samples)})"

    def _sample(self, sample: ReferSample | int) -> ReferSample:
        return self.samples[sample] if isinstance(sample, (int, np.integer)) else sample

    def _target_anns(self, s: ReferSample) -> list[dict[str, Any]]:
        anns = [self._anns[a] for a in s.ann_ids]
        if self.kind == "grefer":
            # ReLA's G_REFER.getMaskByRef leaves crowd annotations out of the merged target.
            anns = [a for a in anns if not a.get("iscrowd", 0)]
        return anns

    def mask(self, sample: ReferSample | int) -> np.ndarray:
        """bool (height, width): the union of the sample's annotation masks; all False for no-target.

        gREFER sources leave crowd annotations out of the union (ReLA's convention); REFER refs never
        point at crowd annotations.
        """
        s = self._sample(sample)
        out = np.zeros((s.height, s.width), dtype=bool)
        for ann in self._target_anns(s):
            out |= decode_segmentation(ann["segmentation"], s.height, s.width)
        return out

    def box(self, sample: ReferSample | int) -> tuple[float, float, float, float] | None:
        """Ground-truth box ``(x0, y0, x1, y1)`` in pixel edges: the COCO ``bbox`` (xywh) as xyxy, the
        union box over the annotations :meth:`mask` merges, None for no-target."""
        s = self._sample(sample)
        anns = self._target_anns(s)
        if s.no_target or not anns:
            return None
        boxes = []
        for ann in anns:
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes.append((x, y, x + w, y + h))
        return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                max(b[3] for b in boxes))

    def load_image(self, sample: ReferSample | int) -> Image.Image:
        """The sample's image as RGB (EXIF applied); :class:`InputError` if missing or corrupt."""
        from lvg.core.image import load_image

        return load_image(self._sample(sample).image_path)

    def with_targets(self) -> ReferSource:
        """The same split without its no-target refs (a gREFER split scored by a task that needs a target)."""
        return ReferSource(name=self.name, kind=self.kind, split=self.split,
                           samples=[s for s in self.samples if not s.no_target], annotations=self._anns,
                           image_dir=self.image_dir, skipped=self.skipped, instances=self.instances,
                           outside_train=self.outside_train)

    def sentences_flat(self) -> list[tuple[int, str]]:
        """``(sample_index, sentence)`` for every sentence of every sample: what evaluation iterates."""
        return [(i, sent) for i, s in enumerate(self.samples) for sent in s.sentences]

    def num_sentences(self) -> int:
        return sum(len(s.sentences) for s in self.samples)


def _index_instances(path: Path) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    data = read_json(path, "COCO instances file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
        data.get("annotations"), list
    ):
        raise InputError(f"COCO instances file has no 'images' / 'annotations' lists: {path}")
    try:
        images = {int(img["id"]): img for img in data["images"]}
        anns = {int(ann["id"]): ann for ann in data["annotations"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"malformed COCO instances file ({type(exc).__name__}: {exc}): {path}") from None
    return images, anns


def _sentences(ref: dict[str, Any]) -> tuple[str, ...]:
    out = []
    for sent in ref.get("sentences", []):
        text = sent.get("sent") if isinstance(sent, dict) else sent
        if isinstance(sent, dict) and not text:
            text = sent.get("raw")
        if isinstance(text, str) and text.strip():
            out.append(text.strip())
    return tuple(out)


def _build_source(
    *,
    refs: list[dict[str, Any]],
    instances: Path,
    name: str,
    kind: Literal["refer", "grefer"],
    split: str | None,
    image_dir: Path,
) -> ReferSource:
    images, anns = _index_instances(instances)
    samples: list[ReferSample] = []
    skipped = 0
    used: dict[int, dict[str, Any]] = {}
    splits_seen: set[str] = set()
    outside_train: set[int] = set()
    for ref in refs:
        try:
            ref_split = str(ref["split"])
            splits_seen.add(ref_split)
            if ref_split != "train":
                outside_train.add(int(ref["image_id"]))
            if split is not None and ref_split != split:
                continue
            ref_id, image_id = int(ref["ref_id"]), int(ref["image_id"])
            raw_ids = ref["ann_id"]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed ref in {name} ({type(exc).__name__}: {exc})") from None
        ann_list = [int(a) for a in raw_ids] if isinstance(raw_ids, (list, tuple)) else [int(raw_ids)]
        no_target = bool(ref.get("no_target", False)) or ann_list == [-1] or not ann_list
        ann_ids = () if no_target else tuple(a for a in ann_list if a != -1)
        img = images.get(image_id)
        if img is None:
            raise InputError(f"ref {ref_id} of {name} points at image {image_id}, which instances.json lacks")
        for a in ann_ids:
            if a not in anns:
                raise InputError(f"ref {ref_id} of {name} points at annotation {a}, which instances.json lacks")
            used[a] = anns[a]
        sentences = _sentences(ref)
        if not sentences:
            skipped += 1
            continue
        samples.append(ReferSample(
            ref_id=ref_id,
            image_id=image_id,
            image_path=image_dir / str(img["file_name"]),
            sentences=sentences,
            ann_ids=ann_ids,
            width=int(img["width"]),
            height=int(img["height"]),
            no_target=no_target,
        ))
    if split is not None and split not in splits_seen:
        known = ", ".join(sorted(splits_seen)) or "none"
        raise InputError(f"{name} has no split {split!r} (splits: {known})")
    return ReferSource(name=name, kind=kind, split=split, samples=samples, annotations=used,
                       image_dir=image_dir, skipped=skipped, instances=instances,
                       outside_train=frozenset(outside_train))


def _check_split_by(split_by: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", split_by):
        raise InputError(f"invalid splitBy {split_by!r} (expected e.g. {', '.join(SPLIT_BYS)})")


def _resolve_image_dir(root: Path, image_dir: str | os.PathLike[str] | None) -> Path:
    if image_dir is not None:
        path = Path(image_dir)
        if not path.is_dir():
            raise InputError(f"image directory not found: {path}")
        return path
    return root / "images"


def load_refer(
    root: str | os.PathLike[str],
    dataset: str,
    split_by: str = "unc",
    split: str | None = "train",
    image_dir: str | os.PathLike[str] | None = None,
) -> ReferSource:
    """Read ``<root>/<dataset>/refs(<split_by>).p`` + ``instances.json`` (RefCOCO / RefCOCO+ / RefCOCOg).

    Args:
        root: directory holding the dataset directories (and ``images/`` by default).
        dataset: e.g. ``"refcoco"``, ``"refcoco+"``, ``"refcocog"``, ``"refcoco-synth"``.
        split_by: ``"unc"``, ``"umd"`` or ``"google"``.
        split: e.g. ``"train"``, ``"val"``, ``"testA"``; None for every split.
        image_dir: where ``instances.json``'s ``file_name`` s live; default ``<root>/images``.

    Raises:
        InputError: missing / malformed files, an unknown split, refs pointing at missing annotations.
    """
    _check_split_by(split_by)
    base = Path(root) / dataset
    refs = read_refs_pickle(base / f"refs({split_by}).p")
    return _build_source(refs=refs, instances=base / "instances.json", name=f"{dataset}({split_by})",
                         kind="refer", split=split, image_dir=_resolve_image_dir(Path(root), image_dir))


def load_grefer(
    root: str | os.PathLike[str],
    dataset: str = "grefcoco",
    split_by: str = "unc",
    split: str | None = "train",
    image_dir: str | os.PathLike[str] | None = None,
) -> ReferSource:
    """Read ``<root>/<dataset>/grefs(<split_by>).json`` (or ``.p``) + ``instances.json`` (gRefCOCO).

    Multi-target refs list several annotations (their masks are merged); ``ann_id == [-1]`` is a
    no-target ref (empty mask, no box). Arguments and errors as :func:`load_refer`.
    """
    _check_split_by(split_by)
    base = Path(root) / dataset
    json_path, pickle_path = base / f"grefs({split_by}).json", base / f"grefs({split_by}).p"
    if json_path.exists():
        refs = read_json(json_path, "gREFER refs file")
        if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
            raise InputError(f"gREFER refs file does not hold a list of ref dicts: {json_path}")
    elif pickle_path.exists():
        refs = read_refs_pickle(pickle_path)
    else:
        raise InputError(f"gREFER refs file not found: {json_path}")
    return _build_source(refs=refs, instances=base / "instances.json", name=f"{dataset}({split_by})",
                         kind="grefer", split=split, image_dir=_resolve_image_dir(Path(root), image_dir))


def _detect(base: Path, split_by: str | None) -> tuple[Literal["refer", "grefer"], str]:
    """Which format the dataset directory ``base`` holds, and its splitBy."""
    if not base.is_dir():
        raise InputError(f"dataset directory not found: {base}")
    found: list[tuple[Literal["refer", "grefer"], str]] = []
    for p in sorted(base.iterdir()):
        m = re.fullmatch(r"(g?)refs\((.+)\)\.(p|json)", p.name)
        if m and (m.group(1) or m.group(3) == "p"):
            found.append(("grefer" if m.group(1) else "refer", m.group(2)))
    if split_by is not None:
        found = [f for f in found if f[1] == split_by]
    kinds = sorted(set(found))
    if not kinds:
        by = split_by or "<splitBy>"
        want = f"refs({by}).p or grefs({by}).json"
        raise InputError(f"no {want} in {base}")
    if len(kinds) > 1:
        options = ", ".join(f"{base}:{k[1]}" if k[0] == "refer" else f"{base}:{k[1]} (gREFER)" for k in kinds)
        raise InputError(f"{base} holds several refs files; name the splitBy: DIR:DATASET:SPLITBY ({options})")
    return kinds[0]


def open_dataset(
    spec: str | os.PathLike[str],
    *,
    split: str | None = "train",
    image_dir: str | os.PathLike[str] | None = None,
    prefer_gres: bool = False,
) -> ReferSource:
    """Open a dataset named by a path spec.

    Accepted forms:

    - ``DIR`` where DIR is a :func:`synthetic dataset <lvg.train.synth.generate>` (``synth.json`` or its
      two sub-directories): ``refcoco-synth``, or ``grefcoco-synth`` when ``prefer_gres``.
    - ``DIR`` where DIR itself holds one ``refs(*).p`` / ``grefs(*).json`` (root = its parent).
    - ``DIR:DATASET`` or ``DIR:DATASET:SPLITBY`` (e.g. ``data:refcocog:umd``, ``data:grefcoco:unc``):
      the format is detected from the refs file present in ``DIR/DATASET``.
    - Several of these separated by commas: one dataset over all of them (:mod:`lvg.train.combined`).

    Raises:
        InputError: nothing readable matches the spec.
    """
    text = os.fspath(spec)
    path = Path(text)
    parts = data_parts(text)
    if len(parts) > 1:  # several datasets as one
        from lvg.train.combined import open_combined

        return open_combined(parts, split=split, image_dir=image_dir, prefer_gres=prefer_gres)
    try:
        path.stat()
    except FileNotFoundError:
        pass
    except OSError as exc:  # a name over the system's limit, a loop of links
        raise InputError(f"dataset not found: {text} ({exc.strerror or exc})") from None
    if path.is_dir():
        has_synth = (path / "synth.json").exists() or any((path / d).is_dir() for d in SYNTH_DATASETS)
        if has_synth:
            order = SYNTH_DATASETS[::-1] if prefer_gres else SYNTH_DATASETS
            for dataset in order:
                if (path / dataset).is_dir():
                    return _open(path, dataset, None, split, image_dir)
        return _open(path.parent, path.name, None, split, image_dir)
    pieces = text.split(":")
    for k in (2, 1):
        if len(pieces) <= k:
            continue
        root = ":".join(pieces[:-k])
        if root and Path(root).is_dir():
            dataset = pieces[-k]
            split_by = pieces[-1] if k == 2 else None
            return _open(Path(root), dataset, split_by, split, image_dir)
    if path.is_file():
        # A refs file or synth.json given directly: the dataset is the folder around it.
        raise InputError(f"{text} is a file; a dataset is named by its directory "
                         f"(DIR, DIR:DATASET or DIR:DATASET:SPLITBY), e.g. {path.parent}")
    raise InputError(f"dataset not found: {text} (expected DIR, DIR:DATASET or DIR:DATASET:SPLITBY)")


def _open(root: Path, dataset: str, split_by: str | None, split: str | None,
          image_dir: str | os.PathLike[str] | None) -> ReferSource:
    kind, found_by = _detect(root / dataset, split_by)
    loader = load_grefer if kind == "grefer" else load_refer
    return loader(root, dataset, split_by=found_by, split=split, image_dir=image_dir)


# --------------------------------------------------------------------------------------------------
# Which augmentations keep an expression true


# Words that make a horizontal flip change what the expression means (RefCOCO has many misspellings).
_DIRECTION_RE = re.compile(
    r"\b(left\w*|right\w*|lft|rt|rgt|rite|rigth\w*|riht|lef|west\w*|east\w*|clockwise|counterclockwise)\b"
)
_COLOUR_WORDS = frozenset(
    """red green blue yellow purple orange pink brown black white gray grey tan beige violet navy maroon teal
    gold golden silver cyan magenta turquoise khaki olive lime crimson burgundy blond blonde colour color
    colored coloured colorful colourful dark darker light lighter bright brighter pale""".split()
)


def flip_allowed(text: str) -> bool:
    """Whether a horizontal flip keeps ``text`` true: False when it has a left/right-like word."""
    return _DIRECTION_RE.search(text.lower()) is None


def mentions_colour(text: str) -> bool:
    """Whether ``text`` names a colour or brightness (then colour jitter could make it false)."""
    return any(w in _COLOUR_WORDS for w in re.findall(r"[a-z]+", text.lower()))

