"""The torch ``Dataset`` over a :class:`~lvg.train.data.ReferSource` (imports torch).

Items are dicts (default-collatable):

- ``image``: float32 (3, S, S), letterboxed and normalised exactly as the runtime does
  (:func:`lvg.core.preprocess.preprocess_image`);
- ``text_ids``: int64 (L,), ``text_mask``: bool (L,) (:meth:`lvg.core.tokenizer.Tokenizer.encode`,
  L = ``preprocess.max_text_len``);
- ``target``: float32 (S/m, S/m), the target mask letterboxed and area-averaged to the model's output
  grid (:func:`lvg.core.preprocess.letterbox_mask` with ``out_size = S // m``, ``m`` the map stride, 4 for
  the paper's variants): a soft target;
- ``no_target``: float32 scalar, 1.0 for a no-target expression;
- ``index``: int. Training: the sample index. Evaluation: the position in
  :meth:`ReferSource.sentences_flat` (every sentence is one item);
- ``sample_index``: int, the sample the item came from;
- ``direction``: int64 scalar, the sentence's direction label (:func:`lvg.train.words.direction_class`).
- ``attributes``: int64 ``(4,)``, its attribute-word labels (:func:`lvg.train.words.attribute_classes`).
- ``patch_shape``: int64 ``(g*g,)``, only with ``patch_labels``: the shape of the object on each patch
  (:meth:`lvg.train.patch_labels.PatchLabels.shape`; -100 on background), after the item's flip.
- ``objects``: int64 ``(S/m, S/m)`` and ``target_object``: int64 scalar, only with ``objects``: which object
  each pixel of the map lies on (:meth:`lvg.train.patch_labels.PatchLabels.owners`, 0 = background), after the
  item's flip, and the index there of the sentence's one target (-100 for a sentence with no target or several).

Training draws ONE sentence per sample per epoch; the draw and the augmentations are a pure function
of ``(seed, epoch, index)`` (``numpy.random.default_rng([seed, epoch, index])``), so they do not depend
on the worker count or order. Call :meth:`GroundingDataset.set_epoch` before each epoch (with
``persistent_workers=False``, each epoch's workers get the updated copy).

Augmentations (training only, and only those that keep the expression true):

- horizontal flip with probability 0.5, unless the sentence has a left/right-like word
  (:func:`lvg.train.data.flip_allowed`);
- mild photometric jitter (brightness, contrast, saturation each by a factor in [0.9, 1.1]) with
  probability 0.8, unless the sentence names a colour or brightness
  (:func:`lvg.train.data.mentions_colour`; the synthetic data's expressions depend on colour).

Nothing moves or crops the image, so positions ("leftmost", "above") and sizes stay true.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from lvg.config import MAP_STRIDES, ModelConfig, PreprocessConfig
from lvg.core.preprocess import letterbox_mask, preprocess_image
from lvg.core.tokenizer import Tokenizer
from lvg.errors import InputError
from lvg.train.data import ReferSource, flip_allowed, mentions_colour
from lvg.train.patch_labels import IGNORE, MIN_COVER, PatchLabels
from lvg.train.run_dir import ignore_stop_signals
from lvg.train.sampling import FLIP_PROBABILITY, JITTER_PROBABILITY, Planned
from lvg.train.words import attribute_classes, direction_class

__all__ = ["GroundingDataset", "JITTER_RANGE", "FLIP_PROBABILITY", "JITTER_PROBABILITY", "train_loader"]

#: Brightness / contrast / saturation factors are drawn uniformly from this range.
JITTER_RANGE = (0.9, 1.1)


def _jitter(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    lo, hi = JITTER_RANGE
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(float(rng.uniform(lo, hi)))
    return image


class GroundingDataset(torch.utils.data.Dataset):
    """(image, expression) -> model inputs and a target at the model's map scale, for training or evaluation.

    Args:
        source: the split to read (:func:`lvg.train.data.load_refer` / ``load_grefer`` / ``open_dataset``).
        preprocess: the model's :class:`~lvg.config.PreprocessConfig` (size, mean/std, max_text_len).
        tokenizer: the model's tokenizer.
        train: one sampled sentence per sample with augmentation (True), or every sentence, no
            augmentation (False).
        seed: seeds the sentence draw and augmentation.
        augment: set False to train without augmentation.
        map_stride: input pixels per target cell, the model's ``HeadConfig.map_stride`` (4: 1/4 scale).
        patch_labels: the split's per-patch labels (synthetic data), for items with ``patch_shape``.
        objects: items also carry ``objects`` and ``target_object`` (needs ``patch_labels``).
    """

    def __init__(
        self,
        source: ReferSource,
        *,
        preprocess: PreprocessConfig,
        tokenizer: Tokenizer,
        train: bool,
        seed: int = 0,
        augment: bool = True,
        map_stride: int = 4,
        patch_labels: PatchLabels | None = None,
        objects: bool = False,
    ) -> None:
        if objects and patch_labels is None:
            raise InputError("per-pixel object labels (objects=True) are read from the split's patch_labels")
        if map_stride not in MAP_STRIDES:
            raise InputError(f"map_stride must be 4 or 2 (a model's HeadConfig.map_stride), got {map_stride}")
        if preprocess.size % map_stride:
            raise InputError(f"preprocess.size {preprocess.size} must be a multiple of the map stride {map_stride} "
                             "(targets are at the map's scale)")
        self.map_stride = int(map_stride)
        self.source = source
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.train = bool(train)
        self.seed = int(seed)
        self.augment = bool(augment)
        self.epoch = 0
        self.patch_labels = patch_labels
        self.objects = bool(objects)
        self._flat = source.sentences_flat() if not self.train else []

    @classmethod
    def for_model(cls, source: ReferSource, cfg: ModelConfig, *, tokenizer: Tokenizer, train: bool,
                  seed: int = 0, augment: bool = True, patch_shape: bool = False,
                  objects: bool = False, patch_cover: float = MIN_COVER) -> GroundingDataset:
        """The dataset a model of config ``cfg`` trains or is scored on: its preprocessing and map scale;
        with ``patch_shape``, items carry ``patch_shape`` on its patch grid (an object labels the patches it
        covers more than ``patch_cover`` of), with ``objects`` ``objects`` and ``target_object`` at the map's
        scale (both read from ``source.instances``)."""
        labels = PatchLabels(source.instances, cfg, min_cover=patch_cover) if patch_shape or objects else None
        return cls(source, preprocess=cfg.preprocess, tokenizer=tokenizer, train=train, seed=seed,
                   augment=augment, map_stride=cfg.head.map_stride, patch_labels=labels, objects=objects)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose sentence draws and augmentations :meth:`__getitem__` returns."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source.samples) if self.train else len(self._flat)

    def plan(self, index: int) -> tuple[int, str, bool, bool]:
        """``(sample_index, sentence, flip, jitter)`` of item ``index`` in the current epoch.

        The item's augmentations only; :meth:`__getitem__` applies them (exposed for tests and logs).
        """
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range for a dataset of {len(self)}")
        if not self.train:
            sample_index, sentence = self._flat[index]
            return sample_index, sentence, False, False
        sample = self.source.samples[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        sentence = sample.sentences[int(rng.integers(len(sample.sentences)))]
        # Draw every random number unconditionally so one decision never shifts another's stream.
        flip_draw, jitter_draw = rng.random(), rng.random()
        flip = self.augment and flip_allowed(sentence) and flip_draw < FLIP_PROBABILITY
        jitter = self.augment and not mentions_colour(sentence) and jitter_draw < JITTER_PROBABILITY
        return index, sentence, flip, jitter

    def arrays(self, index: int | Planned) -> dict[str, Any]:
        """Item ``index`` as numpy arrays (what evaluation feeds a model through the numpy contract of
        :mod:`lvg.core.outputs`); :meth:`__getitem__` is the same item as tensors. A
        :class:`~lvg.train.sampling.Planned` index is an item a group sampler chose (sentence, flip and
        jitter decided there)."""
        if isinstance(index, Planned):
            sample = self.source.samples[index.sample_index]
            sentence = sample.sentences[index.sentence_index]
            jitter_rng = np.random.default_rng([self.seed, 0x717, index.key]) if index.jitter else None
            return self._render(index.key, index.sample_index, sentence, index.flip, jitter_rng)
        sample_index, sentence, flip, jitter = self.plan(int(index))
        jitter_rng = np.random.default_rng([self.seed, self.epoch, int(index), 1]) if jitter else None
        return self._render(int(index), sample_index, sentence, flip, jitter_rng)

    def _render(self, index: int, sample_index: int, sentence: str, flip: bool,
                jitter_rng: np.random.Generator | None) -> dict[str, Any]:
        sample = self.source.samples[sample_index]
        image = self.source.load_image(sample)
        mask = self.source.mask(sample)  # (H, W) bool at the original resolution
        if mask.shape != (image.height, image.width):
            raise InputError(
                f"image {sample.image_path} is {image.width}x{image.height} but instances.json says "
                f"{sample.width}x{sample.height}"
            )
        if flip:
            image = ImageOps.mirror(image)
            mask = mask[:, ::-1]
        if jitter_rng is not None:
            image = _jitter(image, jitter_rng)
        pixels, lb = preprocess_image(image, self.preprocess)  # (3, S, S) float32
        target = letterbox_mask(mask, lb, out_size=self.preprocess.size // self.map_stride)  # (S/m, S/m) float32
        ids, text_mask = self.tokenizer.encode(sentence, self.preprocess.max_text_len)
        extra = {} if self.patch_labels is None else {"patch_shape": self.patch_labels.shape(sample.image_id, lb, flip)}
        if self.objects:
            extra.update(self._objects(sample, lb, flip))
        return {
            "image": pixels,
            "text_ids": ids,
            "text_mask": text_mask,
            "target": np.ascontiguousarray(target, dtype=np.float32),
            "no_target": bool(sample.no_target),
            "index": int(index),
            "sample_index": int(sample_index),
            "direction": direction_class(sentence),
            "attributes": attribute_classes(sentence),
            **extra,
        }

    def _objects(self, sample: Any, lb: Any, flip: bool) -> dict[str, Any]:
        """``objects`` and ``target_object`` of one item (see the module docstring)."""
        labels = self.patch_labels
        assert labels is not None  # checked in __init__
        owners = labels.owners(sample.image_id, lb, flip)  # (S/m, S/m)
        if owners.shape[0] * self.map_stride != self.preprocess.size:
            raise InputError(f"per-pixel object labels are {owners.shape[0]} pixels wide, the map "
                             f"{self.preprocess.size // self.map_stride}")
        single = not sample.no_target and len(sample.ann_ids) == 1
        target = labels.object_index(sample.image_id, sample.ann_ids[0]) if single else IGNORE
        return {"objects": owners, "target_object": target}

    def __getitem__(self, index: int | Planned) -> dict[str, Any]:
        item = self.arrays(index)
        return {
            "image": torch.from_numpy(item["image"]),
            "text_ids": torch.from_numpy(item["text_ids"]),
            "text_mask": torch.from_numpy(item["text_mask"]),
            "target": torch.from_numpy(item["target"]),
            "no_target": torch.tensor(1.0 if item["no_target"] else 0.0, dtype=torch.float32),
            "index": item["index"],
            "sample_index": item["sample_index"],
            "direction": torch.tensor(item["direction"], dtype=torch.int64),
            "attributes": torch.tensor(item["attributes"], dtype=torch.int64),
            **({"patch_shape": torch.from_numpy(item["patch_shape"])} if "patch_shape" in item else {}),
            **({"objects": torch.from_numpy(item["objects"]),
                "target_object": torch.tensor(item["target_object"], dtype=torch.int64)} if "objects" in item else {}),
        }


def train_loader(dataset: torch.utils.data.Dataset, batch_sampler: Any, *, num_workers: int, pin_memory: bool,
                 seed: int) -> torch.utils.data.DataLoader:
    """A DataLoader of ``batch_sampler``'s batches of ``dataset`` for the trainer.

    Its workers ignore stop signals: Ctrl-C and ``systemctl stop`` signal the whole process group, and the
    trainer, which gets the same signal, finishes its step, saves and ends them. It draws from its own
    generator (``seed``): creating the iterator must not draw from the global torch RNG, whose stream a
    resumed run restores exactly.
    """
    return torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers,
                                       pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed),
                                       worker_init_fn=ignore_stop_signals)
