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

__all__ = ["REF_ID_STRIDE", "open_combined"]

REF_ID_STRIDE = 10_000_000


def open_combined(specs: list[str], *, split: str | None, image_dir: str | os.PathLike[str] | None,
                  prefer_gres: bool) -> Any:
    """One :class:`~lvg.train.data.ReferSource` over ``specs``' ``split`` (see the module docstring)."""
    from lvg.train.data import ReferSource, open_dataset

    parts = [open_dataset(s, split=split, image_dir=image_dir, prefer_gres=prefer_gres) for s in specs]
    kinds = {p.kind for p in parts}
    if len(kinds) > 1:
        raise InputError("a combined dataset mixes REFER and gREFER layouts; combine datasets of one kind")
    held = frozenset().union(*(p.outside_train for p in parts)) if split == "train" else frozenset()
    samples, annotations, skipped = [], {}, 0
    for k, p in enumerate(parts):
        annotations.update(p._anns)  # the same COCO annotation ids in every RefCOCO-family dataset
        kept = [dataclasses.replace(s, ref_id=s.ref_id + k * REF_ID_STRIDE) for s in p.samples
                if s.image_id not in held]
        skipped += p.skipped + len(p.samples) - len(kept)
        samples.extend(kept)
    return ReferSource(name="+".join(p.name for p in parts), kind=kinds.pop(), split=split, samples=samples,
                       annotations=annotations, image_dir=parts[0].image_dir, skipped=skipped,
                       instances=parts[0].instances if parts else Path(),
                       outside_train=frozenset().union(*(p.outside_train for p in parts)))
