"""Batch inference on Ray Data: one :class:`~lvg.runtime.grounder.Grounder` per actor, numpy batches in, result
columns out. Needs the ``ray`` extra (``pip install 'latent-vg[ray]'``).

Example (``examples/ray_batch_infer.py``)::

    import ray
    from lvg.integrations.ray import GrounderPredictor

    ds = ray.data.read_images("s3://bucket/frames/", include_paths=True, mode="RGB")
    ds = ds.add_column("text", lambda df: ["the red car"] * len(df))
    out = ds.map_batches(GrounderPredictor, fn_constructor_kwargs={"model": "model.onnx"},
                         batch_size=16, concurrency=4, num_cpus=1)
    out.drop_columns(["mask"]).write_parquet("boxes/")

:class:`GrounderPredictor` is a plain callable class: Ray creates one per actor (``concurrency`` of them) and
calls it with ``{"column": numpy array}`` batches. It loads the model once per actor, so each actor holds one
inference session; give each actor ``num_cpus`` matching the threads it should use.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np

from lvg.errors import InputError, LVGError, require

__all__ = ["OUTPUT_COLUMNS", "GrounderPredictor", "infer_dataset"]

#: The columns :class:`GrounderPredictor` adds to each batch (``mask`` only with ``include_mask``).
OUTPUT_COLUMNS = ("box", "has_box", "score", "low_confidence", "no_target", "no_target_prob", "mask_area",
                  "instances", "unknown_words", "error", "mask")


def _image(value: Any) -> Any:
    """One cell of the image column as the Grounder takes it: arrays and paths as they are, encoded bytes
    (``ray.data.read_binary_files``) decoded by Pillow."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        from PIL import Image

        try:
            return Image.open(io.BytesIO(bytes(value)))
        except OSError as exc:
            raise InputError(f"cannot decode image bytes: {exc}") from None
    if isinstance(value, np.str_):
        return str(value)
    return value


class GrounderPredictor:
    """The callable class for ``Dataset.map_batches``.

    Args:
        model: the model file (``.onnx``, engine or ``.safetensors``); ``None`` = the bundled model.
        image_column: the column holding images: uint8 (B, H, W, 3) arrays or ragged arrays of (H, W, 3),
            file paths, or encoded image bytes.
        text_column: the column holding one expression per row (ignored when ``text`` is given).
        text: one expression for every row.
        task, mask_threshold, channel_order: as for :meth:`~lvg.runtime.grounder.Grounder.predict`.
        include_mask: add the ``mask`` column (a bool (H, W) array per row).
        keep_image: keep the image column in the output (dropped by default: it is the bulk of the data).
        on_error: ``"record"``: a row whose image or text cannot be used gets its message in ``error`` and
            empty answers; ``"raise"``: the batch fails.
        backend, device: as for :meth:`~lvg.runtime.grounder.Grounder.load`.

    Output columns, one row per input row, besides the input's other columns: ``box`` int32 (B, 4) ``x1, y1,
    x2, y2`` (-1 when there is none), ``has_box`` bool, ``score`` float32, ``low_confidence`` bool,
    ``no_target`` bool, ``no_target_prob`` float32 (NaN for non-GRES models), ``mask_area`` int64,
    ``instances`` int32 (separate regions), ``unknown_words`` (a JSON list per row), ``error`` (``""`` when the
    row succeeded) and ``mask`` (with ``include_mask``).
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, *, image_column: str = "image",
                 text_column: str = "text", text: str | None = None, task: str | None = None,
                 mask_threshold: float | None = None, channel_order: str = "rgb", include_mask: bool = True,
                 keep_image: bool = False, on_error: str = "record", backend: str = "auto",
                 device: str = "auto") -> None:
        from lvg.runtime.grounder import Grounder

        if on_error not in ("record", "raise"):
            raise InputError(f"on_error must be 'record' or 'raise', got {on_error!r}")
        self.grounder = Grounder.load(model, backend=backend, device=device)
        self.image_column, self.text_column, self.text = image_column, text_column, text
        self.opts = {"task": task, "mask_threshold": mask_threshold, "channel_order": channel_order}
        self.include_mask, self.keep_image, self.on_error = include_mask, keep_image, on_error

    def _predict(self, images: list[Any], texts: list[str]) -> list[Any]:
        # "record": a row whose text cannot be used answers as its error; the other rows share one model call
        mode = "raise" if self.on_error == "raise" else "yield"
        return self.grounder.predict_batch(images, texts, on_error=mode, **self.opts)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.image_column not in batch:
            raise InputError(f"the batch has no {self.image_column!r} column (columns: {', '.join(batch)})")
        n = len(batch[self.image_column])
        if self.text is None and self.text_column not in batch:
            raise InputError(f"the batch has no {self.text_column!r} column; name it or pass text=")
        texts = [self.text] * n if self.text is not None else [str(t) for t in batch[self.text_column]]
        images = []
        for v in batch[self.image_column]:
            try:
                images.append(_image(v))
            except LVGError as exc:
                if self.on_error == "raise":
                    raise
                images.append(exc)
        ok = [i for i, img in enumerate(images) if not isinstance(img, LVGError)]
        answers: list[Any] = list(images)
        for i, r in zip(ok, self._predict([images[i] for i in ok], [texts[i] for i in ok]) if ok else []):
            answers[i] = r
        return self._columns(batch, answers)

    def _columns(self, batch: dict[str, np.ndarray], answers: list[Any]) -> dict[str, np.ndarray]:
        n = len(answers)
        out = {k: v for k, v in batch.items() if self.keep_image or k != self.image_column}
        box = np.full((n, 4), -1, dtype=np.int32)  # (B, 4) x1, y1, x2, y2; -1 = no box
        cols: dict[str, Any] = {
            "has_box": np.zeros(n, bool), "score": np.zeros(n, np.float32), "low_confidence": np.ones(n, bool),
            "no_target": np.zeros(n, bool), "no_target_prob": np.full(n, np.nan, np.float32),
            "mask_area": np.zeros(n, np.int64), "instances": np.zeros(n, np.int32),
            "unknown_words": np.array(["null"] * n, dtype=object), "error": np.array([""] * n, dtype=object),
        }
        masks = np.empty(n, dtype=object)
        for i, r in enumerate(answers):
            if isinstance(r, LVGError):
                cols["error"][i] = str(r)
                masks[i] = np.zeros((0, 0), bool)
                continue
            if r.box is not None:
                box[i], cols["has_box"][i] = r.box, True
            cols["score"][i], cols["low_confidence"][i], cols["no_target"][i] = r.score, r.low_confidence, r.no_target
            if r.no_target_prob is not None:
                cols["no_target_prob"][i] = r.no_target_prob
            cols["mask_area"][i], cols["instances"][i] = int(r.mask.sum()), len(r.instances)
            cols["unknown_words"][i] = json.dumps(r.unknown_words)
            masks[i] = r.mask
        out.update(cols, box=box)
        if self.include_mask:
            out["mask"] = masks
        return out


def infer_dataset(ds: Any, model: str | os.PathLike[str] | None = None, *, batch_size: int = 16,
                  concurrency: int = 1, num_cpus: float = 1, **kwargs: Any) -> Any:
    """``ds.map_batches(GrounderPredictor, ...)`` with the model and options given: a lazy Ray ``Dataset`` of
    the result columns (see :class:`GrounderPredictor`; ``kwargs`` are its options).

    Raises:
        MissingDependencyError: Ray is not installed (names the ``ray`` extra).
    """
    require("ray", extra="ray", purpose="batch inference on Ray Data")
    if model is not None:  # Ray's workers may start in another folder
        model = os.path.abspath(os.fspath(model))
    return ds.map_batches(GrounderPredictor, fn_constructor_kwargs={"model": model, **kwargs}, batch_size=batch_size,
                          concurrency=concurrency, num_cpus=num_cpus, batch_format="numpy")
