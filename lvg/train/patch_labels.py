"""What the generator knows about every patch of a synthetic scene: the shape, colour, size and texture of
the object covering it, and that object's centre (torch-free).

Both the pretraining stage (:mod:`lvg.train.pretrain`) and the grounding runs' per-patch shape loss
(``TrainConfig.loss_patch_shape``) read these labels. A patch is labelled by the object covering most of it,
if that object covers more than :data:`MIN_COVER` of it (or the share a caller asks for:
``TrainConfig.patch_shape_cover``); else it is background. Shapes, per image of a model of config ``cfg``
(``g = cfg.encoder.grid``): ``attributes (g*g, 4)`` int64 (0 = background, else 1 + the value's index in
:data:`ATTRIBUTES`), ``centre (g*g, 2)`` float32 (the object's mask centre in the
letterboxed frame, normalised to [0, 1]), ``object (g*g,)`` bool. The object pick loss
(``TrainConfig.loss_object_pick``) reads :meth:`PatchLabels.owners`: which object each pixel of the map lies on.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from lvg.config import ModelConfig
from lvg.core.preprocess import Letterbox, letterbox_mask
from lvg.errors import ConfigError, InputError
from lvg.train.refer_files import decode_segmentation, read_json
from lvg.train.synth import COLOURS, SHAPES, SIZES, TEXTURES

__all__ = ["ATTRIBUTES", "IGNORE", "MIN_COVER", "PatchLabels", "read_objects"]

#: The attribute vocabularies a patch is classified into (each plus "background" at index 0).
ATTRIBUTES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("shape", SHAPES), ("colour", tuple(COLOURS)), ("size", SIZES), ("texture", TEXTURES),
)
#: Fraction of a patch an object must cover to label it.
MIN_COVER = 0.3
#: The label of a position no loss reads (``torch.nn.functional.cross_entropy``'s default ``ignore_index``).
IGNORE = -100


def _object_attributes(ann: dict[str, Any], categories: dict[int, str]) -> list[int]:
    """1 + the index of each attribute value of one synthetic annotation (shape from its category)."""
    attrs = ann.get("attributes")
    shape = categories.get(int(ann.get("category_id", -1)))
    if not isinstance(attrs, dict) or shape is None:
        raise ConfigError("per-patch labels need per-object attributes, which only `lvg data synth` datasets carry")
    values = {"shape": shape, **attrs}
    try:
        return [1 + vocab.index(values[name]) for name, vocab in ATTRIBUTES]
    except (KeyError, ValueError) as exc:
        raise InputError(f"annotation {ann.get('id')} has an attribute outside the generator's: {exc}") from None


def read_objects(instances: Path) -> tuple[dict[int, list[dict[str, Any]]], dict[int, str]]:
    """Every annotation of a COCO ``instances.json`` by image (the refs of a split name only some of an
    image's objects; an unnamed one is still no background), and the category names by id."""
    data = read_json(instances, "COCO instances file")
    try:
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in data["annotations"]:
            by_image.setdefault(int(ann["image_id"]), []).append(ann)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"malformed COCO instances file ({type(exc).__name__}: {exc}): {instances}") from None
    return {k: sorted(v, key=lambda a: int(a["id"])) for k, v in by_image.items()}, categories


class PatchLabels:
    """The per-patch labels of the images of one COCO ``instances.json`` (a synthetic dataset's split), on
    the patch grid of a model of config ``model_cfg``; an object labels a patch it covers more than
    ``min_cover`` of (and more of than any other object does).

    The last :data:`CACHED` images' labels are kept: a grounding batch holds each of its images several
    times (``sentences_per_image``), and decoding every object's mask is most of an item's cost.
    """

    CACHED = 64

    def __init__(self, instances: Path | None, model_cfg: ModelConfig, *, min_cover: float = MIN_COVER) -> None:
        if instances is None:
            raise ConfigError("per-patch labels need the split's instances.json (an `lvg data synth` dataset)")
        if not 0 < min_cover < 1:
            raise ConfigError(f"a patch label's minimum cover must lie in (0, 1), got {min_cover}")
        self.cfg = model_cfg
        self.min_cover = float(min_cover)
        self.objects, self.categories = read_objects(instances)
        self._cache: OrderedDict[tuple[int, Letterbox, bool], tuple[np.ndarray, ...]] = OrderedDict()

    def __call__(self, image_id: int, lb: Letterbox, flip: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(attributes, centre, object)`` of image ``image_id`` as preprocessed with letterbox ``lb``,
        mirrored first with ``flip`` (new arrays on every call)."""
        return tuple(a.copy() for a in self._cached(image_id, lb, flip)[:3])  # type: ignore[return-value]

    def owners(self, image_id: int, lb: Letterbox, flip: bool) -> np.ndarray:
        """``(q, q)`` int64 at the map's scale (``q = cfg.prob_size``): 0 on the background, ``k`` on the pixels
        of the image's ``k``-th object (1-based, in annotation-id order: :meth:`object_index`), the object
        covering most of a pixel where several touch it (a new array on every call)."""
        return self._cached(image_id, lb, flip)[3].astype(np.int64)

    def object_index(self, image_id: int, ann_id: int) -> int:
        """The 1-based index :meth:`owners` gives annotation ``ann_id`` of image ``image_id``."""
        ids = [int(a["id"]) for a in self.objects.get(int(image_id), [])]
        if int(ann_id) not in ids:
            raise InputError(f"annotation {ann_id} is not an object of image {image_id} in instances.json")
        return 1 + ids.index(int(ann_id))

    def _cached(self, image_id: int, lb: Letterbox, flip: bool) -> tuple[np.ndarray, ...]:
        key = (int(image_id), lb, bool(flip))
        if key not in self._cache:
            self._cache[key] = self._compute(*key)
            if len(self._cache) > self.CACHED:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def _compute(self, image_id: int, lb: Letterbox, flip: bool) -> tuple[np.ndarray, ...]:
        g, q = self.cfg.encoder.grid, self.cfg.prob_size
        anns = self.objects.get(int(image_id), [])
        if len(anns) > 255:
            raise InputError(f"image {image_id} has {len(anns)} objects; per-pixel object labels hold 255")
        cover = np.full((len(anns) + 1, g, g), self.min_cover, dtype=np.float32)  # row 0: the background's bar
        pixel_cover = np.full((len(anns) + 1, q, q), 0.5, dtype=np.float32)  # row 0: a pixel's bar
        centres = np.zeros((len(anns) + 1, 2), dtype=np.float32)
        labels = np.zeros((len(anns) + 1, len(ATTRIBUTES)), dtype=np.int64)
        for k, ann in enumerate(anns, start=1):
            m = decode_segmentation(ann["segmentation"], lb.orig_h, lb.orig_w)
            if flip:
                m = m[:, ::-1]
            soft = letterbox_mask(m, lb, out_size=q)  # (q, q) coverage at the map's scale
            pixel_cover[k] = soft
            cover[k] = soft.reshape(g, q // g, g, q // g).mean(axis=(1, 3))  # (q, q) -> (g, g) patch coverage
            ys, xs = np.nonzero(soft > 0.5)
            if xs.size:
                centres[k] = (xs.mean() + 0.5) / q, (ys.mean() + 0.5) / q
            labels[k] = _object_attributes(ann, self.categories)
        owner = cover.argmax(axis=0).reshape(-1)  # (g*g,): 0 = background
        pixel_owner = pixel_cover.argmax(axis=0).astype(np.uint8)  # (q, q): 0 = background (ties: the first)
        return labels[owner], centres[owner], owner > 0, pixel_owner

    def shape(self, image_id: int, lb: Letterbox, flip: bool) -> np.ndarray:
        """``(g*g,)`` int64: the index in ``SHAPES`` of the shape of the object on each patch, :data:`IGNORE`
        on background patches (the target of the per-patch shape loss)."""
        attributes, _, on = self(image_id, lb, flip)
        return np.where(on, attributes[:, 0] - 1, IGNORE).astype(np.int64)
