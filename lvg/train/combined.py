"""Several REFER datasets as one (the paper's "combined RefCOCO" setting, Table 1): a data spec of
comma-separated specs, e.g. ``data:refcoco:unc,data:refcoco+:unc,data:refcocog:umd``.

The datasets share COCO train2014's images and annotation ids. Their train splits overlap other datasets'
evaluation images (a RefCOCO train image can be a RefCOCOg val image), so the combined train split leaves out
every image that any of the datasets puts in a split other than ``train``, as PolyFormer and its successors
do; other splits are the union of the datasets' own. Reference ids are made distinct by dataset
(``ref_id + 10_000_000 * k`` for the k-th).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from lvg.errors import InputError
from lvg.train.refer_files import read_json, read_refs_pickle

__all__ = ["REF_ID_STRIDE", "open_combined"]

REF_ID_STRIDE = 10_000_000


def _held_out_images(source: Any) -> set[int]:
    """Image ids of ``source``'s dataset in any split other than train, read from its refs file."""
    folder = source.instances.parent
    files = sorted(folder.glob("refs(*).p")) + sorted(folder.glob("grefs(*).json"))
    by = source.name.rsplit("(", 1)[-1].rstrip(")")  # names are "<dataset>(<splitBy>)"
    files = [f for f in files if f.name.split("(")[1].split(")")[0] == by] or files
    if not files:
        raise InputError(f"no refs file beside {source.instances}")
    path = files[0]
    refs = read_refs_pickle(path) if path.suffix == ".p" else read_json(path, "gREFER refs")
    return {int(r["image_id"]) for r in refs if isinstance(r, dict) and r.get("split") != "train"}


def open_combined(specs: list[str], *, split: str | None, image_dir: str | os.PathLike[str] | None,
                  prefer_gres: bool) -> Any:
    """One :class:`~lvg.train.data.ReferSource` over ``specs``' ``split`` (see the module docstring)."""
    from lvg.train.data import ReferSource, open_dataset

    parts = [open_dataset(s, split=split, image_dir=image_dir, prefer_gres=prefer_gres) for s in specs]
    kinds = {p.kind for p in parts}
    if len(kinds) > 1:
        raise InputError("a combined dataset mixes REFER and gREFER layouts; combine datasets of one kind")
    held: set[int] = set()
    if split == "train":
        for p in parts:
            held |= _held_out_images(p)
    samples, annotations, skipped = [], {}, 0
    for k, p in enumerate(parts):
        annotations.update(p._anns)  # the same COCO annotation ids in every RefCOCO-family dataset
        kept = [dataclasses.replace(s, ref_id=s.ref_id + k * REF_ID_STRIDE) for s in p.samples
                if s.image_id not in held]
        skipped += p.skipped + len(p.samples) - len(kept)
        samples.extend(kept)
    return ReferSource(name="+".join(p.name for p in parts), kind=kinds.pop(), split=split, samples=samples,
                       annotations=annotations, image_dir=parts[0].image_dir, skipped=skipped,
                       instances=parts[0].instances if parts else Path())
