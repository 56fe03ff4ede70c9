"""Calibration inputs for static int8 (``lvg export --int8 --calib DATA``): real images and sentences of a
model's own training domain, preprocessed exactly as the runtime preprocesses a request.

Activation ranges measured on random tensors or on another domain's images cut off the values the model
really produces (or waste the int8 range on values it never does), so the samples come from a dataset in
the form ``lvg train --data`` reads, its training split by default (a GRES model reads the gREFER layout of a
folder that has both, as ``lvg train`` does). Two disjoint draws are made from one seeded permutation of its
sentences: the calibration samples, and held-back samples on which the int8 file is compared with its fp32
source before it is kept. Every drawn image is checked to exist before any model runs. Torch-free.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from lvg.core.model_file import ModelFile
from lvg.core.preprocess import preprocess_image
from lvg.errors import InputError
from lvg.train.data import ReferSource, open_dataset

__all__ = ["MAX_CALIBRATION_SAMPLES", "CalibrationSet", "calibration_sets"]

#: More samples than this only move MinMax ranges outward and cost calibration time (one fp32 run each).
MAX_CALIBRATION_SAMPLES = 4096


@dataclass(frozen=True)
class CalibrationSet:
    """Sentences of ``source`` to feed a model: ``picks`` holds ``(sample index, sentence)`` pairs. Iterating
    yields one model input per pick, ``{"image": float32 (1, 3, S, S), "text_ids": int64 (1, L), "text_mask":
    bool (1, L)}``, loaded and preprocessed lazily (one image in memory at a time)."""

    source: ReferSource
    picks: tuple[tuple[int, str], ...]
    model_file: ModelFile

    def __len__(self) -> int:
        return len(self.picks)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        cfg = self.model_file.config
        tok = self.model_file.tokenizer(None)
        if tok is None:
            raise InputError(f"{self.model_file.path} carries no tokenizer to encode calibration sentences with")
        for index, text in self.picks:
            image, _ = preprocess_image(self.source.load_image(index), cfg.preprocess)
            ids, mask, _ = tok.encode_checked(text, cfg.preprocess.max_text_len)
            yield {"image": image[None], "text_ids": ids[None], "text_mask": mask[None]}  # a batch of one


def calibration_sets(
    data: str, model_file: ModelFile, *, samples: int, check_samples: int = 16, seed: int = 0,
    split: str = "train",
) -> tuple[CalibrationSet, CalibrationSet, dict[str, Any]]:
    """The calibration samples, the held-back check samples and a record of both (for ``lvg.calibration``).

    Args:
        data: a dataset as ``lvg train --data`` names it (``DIR``, ``DIR:DATASET[:SPLITBY]``).
        model_file: the fp32 model the inputs are for (its preprocessing and tokenizer).
        samples: calibration sentences (1 .. :data:`MAX_CALIBRATION_SAMPLES`).
        check_samples: held-back sentences (at least 1); fewer when the split has no more sentences.
        seed: the permutation the sentences are drawn from.
        split: the split to draw from.

    Raises:
        InputError: bad counts, unreadable data, a split without a sentence left to check on, or a drawn
            image that is missing.
    """
    if not 1 <= samples <= MAX_CALIBRATION_SAMPLES:
        raise InputError(f"calibration samples must be in 1..{MAX_CALIBRATION_SAMPLES}, got {samples}")
    if not 1 <= check_samples <= MAX_CALIBRATION_SAMPLES:
        raise InputError(f"check samples must be in 1..{MAX_CALIBRATION_SAMPLES}, got {check_samples}")
    source = open_dataset(data, split=split, prefer_gres=model_file.config.head.gres)
    sentences = source.sentences_flat()
    if len(sentences) <= samples:
        raise InputError(f"{data}: the {split!r} split holds {len(sentences)} sentences; {samples} calibration "
                         "samples leave none to check the int8 file on: use fewer (--calib-samples)")
    check_samples = min(check_samples, len(sentences) - samples)
    order = np.random.default_rng(seed).permutation(len(sentences))
    picked = [sentences[i] for i in order[: samples + check_samples]]
    for index, _ in picked:  # a missing image is the error to report now, not after minutes of calibration
        path = source.samples[index].image_path
        if not path.is_file():
            raise InputError(f"{data}: image {path} of the {split!r} split is missing")
    calib = CalibrationSet(source, tuple(picked[:samples]), model_file)
    check = CalibrationSet(source, tuple(picked[samples:]), model_file)
    record = {"data": source.name, "split": split, "seed": seed, "check_samples": check_samples}
    return calib, check, record
