"""One prediction as the Python API and the CLI hand it out: numpy arrays plus JSON and PNG writers."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lvg.core.atomic import OutputSet
from lvg.core.regions import Region
from lvg.errors import InputError
from lvg.runtime.draw import Mark, attention_panel, overlay

__all__ = ["LOW_CONFIDENCE", "Result", "mask_to_rle"]


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO-style uncompressed RLE of a (H, W) bool mask: ``{"size": [H, W], "counts": [...]}``.

    Counts run over the mask in column-major (Fortran) order and start with a run of zeros (possibly
    empty), as ``pycocotools.mask.frPyObjects`` expects.
    """
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return {"size": list(mask.shape), "counts": []}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # indices where a new run starts
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0] + runs
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(r) for r in runs]}


#: ``score`` below this is a low-confidence answer (``Result.low_confidence``): on average over the answer's
#: pixels the model's own map is closer to "not the object" than to "the object".
LOW_CONFIDENCE = 0.5


@dataclass
class Result:
    """The prediction for one (image, text) pair, at the original image resolution.

    Attributes:
        text: the expression. task: ``"ris"``, ``"rec"`` or ``"gres"``.
        mask: bool (H, W) segmentation mask (all False when ``no_target``): ``prob > threshold``.
        box: ``(x1, y1, x2, y2)`` box of the mask's main region in pixels, x2 / y2 exclusive (the
            8-connected region holding the highest probability; specks elsewhere do not stretch it, see
            :mod:`lvg.core.regions`); ``None`` if the mask is empty.
        score: the mean of ``prob`` over the mask's pixels (0.0 for an empty mask). ``prob`` is Eq. 9's map,
            itself the mean of the input expression's and the N latent expressions' sigmoid maps, so ``score``
            is the model's average belief, in [threshold, 1], that the answer's pixels are the object.
        no_target: the GRES head says the expression refers to nothing (only with ``task="gres"``).
        no_target_prob: ``sigmoid(no_target logit)`` for GRES models, else ``None``.
        prob: float32 (H, W) probability map (letterbox undone).
        instances: the mask's separate regions, the main one first and then the others largest first, each a
            :class:`~lvg.core.regions.Region` (bool (H, W) ``mask``, ``box``, ``area``, ``score``, ``peak``);
            specks dropped. For GRES, one per target found.
        unknown_words: the words of ``text`` the model never read in training (from its recorded training
            vocabulary; see :mod:`lvg.core.domain`), ``[]`` when it knows them all, ``None`` when the model
            records no vocabulary. Answers to such words are guesses.
        low_confidence: ``score`` is below :data:`LOW_CONFIDENCE` (0.5), or nothing was found (an empty mask
            without a no-target decision), or the no-target decision was close (probability within 0.15 of
            its threshold).
        timings: milliseconds: ``preprocess`` (this image's decoding and letterboxing), ``inference``,
            ``postprocess``, ``total``. For a batch call (``predict_batch``, ``stream`` with ``batch_size > 1``)
            inference and post-processing are the batch's time divided by its size, and ``batch`` is the size.
        attention: float32 (1 + N, H, W) per-expression attention maps (input expression first), when
            requested from the torch backend; else ``None``.
        image: uint8 (H, W, 3) RGB image the prediction was made on (used by :meth:`save_overlay`).
        model: short description of the model that produced it (variant, backend, device).
        text_truncated: ``text`` had more word pieces than the model reads; it saw only the first ones
            (``max_text_len - 2``), as the ``TextTruncatedWarning`` said.
    """

    text: str
    task: str
    mask: np.ndarray = field(repr=False)
    box: tuple[int, int, int, int] | None
    score: float
    no_target: bool
    prob: np.ndarray = field(repr=False)
    no_target_prob: float | None = None
    timings: dict[str, float] = field(default_factory=dict, repr=False)
    attention: np.ndarray | None = field(default=None, repr=False)
    image: np.ndarray | None = field(default=None, repr=False)
    model: dict[str, Any] = field(default_factory=dict, repr=False)
    text_truncated: bool = False
    instances: tuple[Region, ...] = field(default=(), repr=False)
    unknown_words: list[str] | None = None
    low_confidence: bool = False

    def __repr__(self) -> str:
        w, h = self.image_size
        share = 100 * float(self.mask.mean()) if self.mask.size else 0.0
        parts = [f"text={self.text[:60]!r}", f"task={self.task!r}", f"image={w}x{h}"]
        if self.no_target:
            parts.append(f"no_target=True (p={self.no_target_prob:.3f})")
        else:
            parts += [f"mask={share:.1f}%", f"box={self.box}", f"score={self.score:.3f}",
                      f"instances={len(self.instances)}"]
        if self.low_confidence:
            parts.append("low_confidence=True")
        if self.unknown_words:
            parts.append(f"unknown_words={self.unknown_words}")
        return f"Result({', '.join(parts)})"

    @property
    def image_size(self) -> tuple[int, int]:
        """``(width, height)`` of the original image."""
        return int(self.mask.shape[1]), int(self.mask.shape[0])

    def to_dict(self, *, include_mask: bool = True) -> dict[str, Any]:
        """A JSON-serialisable summary; the mask (and, for GRES, each instance's mask) as COCO uncompressed RLE
        (``include_mask``)."""
        w, h = self.image_size
        area = int(self.mask.sum())
        instances = []
        for inst in self.instances:
            entry: dict[str, Any] = {"box": list(inst.box), "score": round(inst.score, 6),
                                     "peak": round(inst.peak, 6), "area": inst.area}
            if include_mask and self.task == "gres":
                entry["mask_rle"] = mask_to_rle(inst.mask)
            instances.append(entry)
        data: dict[str, Any] = {
            "text": self.text,
            "text_truncated": bool(self.text_truncated),
            "unknown_words": None if self.unknown_words is None else list(self.unknown_words),
            "task": self.task,
            "image_size": [w, h],
            "box": list(self.box) if self.box is not None else None,
            "score": round(float(self.score), 6),
            "low_confidence": bool(self.low_confidence),
            "no_target": bool(self.no_target),
            "no_target_prob": None if self.no_target_prob is None else round(float(self.no_target_prob), 6),
            "mask_area": area,
            "mask_fraction": round(area / max(w * h, 1), 6),
            "instances": instances,
            "timings_ms": {k: round(float(v), 3) for k, v in self.timings.items()},
            "model": dict(self.model),
        }
        if include_mask:
            data["mask_rle"] = mask_to_rle(self.mask)
        return data

    def to_json(self, *, include_mask: bool = True, indent: int | None = None) -> str:
        """:meth:`to_dict` as a JSON string: one compact line (a JSON Lines record) unless ``indent`` is given."""
        separators = (",", ":") if indent is None else None
        return json.dumps(self.to_dict(include_mask=include_mask), indent=indent, sort_keys=True,
                          separators=separators)

    def save_mask(self, path: str | os.PathLike[str]) -> Path:
        """Write the mask as an 8-bit grayscale image (255 = mask, 0 = background) of the image's size, in a
        lossless format named by the suffix (``.png``, ``.tif``, ``.bmp``; no suffix: PNG). Like every writer
        here it writes a temporary file beside ``path`` and renames it: ``path`` is whole or unchanged."""
        return self.write_outputs(mask=path)["mask"]

    def _marks(self, label: bool) -> tuple[list[Mark], str | None]:
        """What the overlay draws for this task: RIS the mask and the main box, REC the box alone, GRES each
        instance in its own colour; and the caption for an answer without a region."""
        flag = " (low confidence)" if self.low_confidence else ""
        if self.no_target or self.box is None:
            what = f"no target (p={self.no_target_prob:.2f})" if self.no_target else "nothing found"
            return [], (f"{self.text}: {what}" if label else None)
        head = f"{self.text} {self.score:.2f}{flag}" if label else None
        if self.task == "rec":
            return [Mark(None, self.box, head)], None
        if self.task == "gres" and self.instances:
            marks = [Mark(r.mask, r.box, head if k == 0 else (f"#{k + 1} {r.score:.2f}" if label else None))
                     for k, r in enumerate(self.instances)]
            return marks, None
        return [Mark(self.mask, self.box, head)], None

    def overlay(self, *, alpha: float = 0.4, label: bool = True) -> np.ndarray:
        """uint8 (H, W, 3) RGB: the answer drawn over the image. RIS: the mask tinted and outlined in a colour
        that contrasts with the object under it, the main region's box and a label (text, score); REC: the box
        and label only; GRES: every instance in its own colour; no target: a caption."""
        if self.image is None:
            raise InputError("this result holds no image to draw on")
        marks, caption = self._marks(label)
        return overlay(self.image, marks, alpha=alpha, caption=caption)

    def save_overlay(self, path: str | os.PathLike[str], *, alpha: float = 0.4, label: bool = True) -> Path:
        """Write :meth:`overlay` in the format the suffix names (``.png``, ``.jpg``, ``.webp``, ...; no suffix:
        PNG)."""
        return self.write_outputs(overlay=path, alpha=alpha, label=label)["overlay"]

    def save_attention(self, path: str | os.PathLike[str]) -> Path:
        """Write the per-expression attention maps side by side over the image (paper Fig. 4), in the
        format the suffix names (no suffix: PNG)."""
        return self.write_outputs(attention=path)["attention"]

    def write_outputs(self, *, overlay: str | os.PathLike[str] | None = None,
                      mask: str | os.PathLike[str] | None = None, attention: str | os.PathLike[str] | None = None,
                      alpha: float = 0.4, label: bool = True) -> dict[str, Path]:
        """Write any of the overlay, the mask and the attention panel together: each goes to a temporary file
        beside it, and they are renamed into place only when every one was written, so a failure (a full
        disk, a folder that cannot be created, an unknown suffix) leaves none of the new files and every
        existing one unchanged. Returns the paths written, by name.

        Raises:
            InputError: an output cannot be written (its message names it).
        """
        wanted = {"overlay": overlay, "mask": mask, "attention": attention}
        paths = {name: Path(p) for name, p in wanted.items() if p is not None}
        formats = {name: _image_format(p, lossless=name == "mask") for name, p in paths.items()}
        images = {}
        for name in paths:  # everything that can fail before a byte is written
            if name == "overlay":
                images[name] = Image.fromarray(self.overlay(alpha=alpha, label=label))
            elif name == "mask":
                images[name] = Image.fromarray(self.mask.astype(np.uint8) * 255)
            else:
                if self.attention is None or self.image is None:
                    raise InputError("no attention maps: predict with return_attention=True on a .safetensors "
                                     "checkpoint")
                images[name] = Image.fromarray(attention_panel(self.image, self.attention))
        with OutputSet() as outputs:
            for name, p in paths.items():
                _parent(p)
                tmp = outputs.stage(p)
                try:
                    images[name].save(tmp, format=formats[name])
                except OSError as exc:
                    raise InputError(f"cannot write {p}: {exc.strerror or exc}") from None
        return paths


def _parent(p: Path) -> None:
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the folder for {p}: {exc.strerror or exc}") from None


#: Formats that keep a mask's 0/255 values exactly (JPEG and lossy WebP would blur its edge).
_LOSSLESS = frozenset({"PNG", "TIFF", "BMP"})


def _image_format(p: Path, *, lossless: bool = False) -> str:
    """The Pillow format ``p``'s suffix names; an unknown or (for masks) lossy one is an error, never an image
    written in another format than its name says."""
    try:
        is_dir = p.is_dir()
    except OSError as exc:  # a name over the system's limit
        raise InputError(f"cannot write {p}: {exc.strerror or exc}") from None
    if is_dir:
        raise InputError(f"cannot write {p}: it is a directory")
    fmt = Image.registered_extensions().get(p.suffix.lower(), None) if p.suffix else "PNG"
    if fmt is None or fmt not in Image.SAVE:
        raise InputError(f"cannot write {p}: unknown image suffix {p.suffix!r} (use .png)")
    if lossless and fmt not in _LOSSLESS:
        raise InputError(f"cannot write the mask as {fmt} ({p}): it is lossy; use .png")
    return fmt
