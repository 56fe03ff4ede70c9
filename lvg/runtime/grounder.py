"""The Python API: ``Grounder.load(path).predict(image, text)`` -> :class:`~lvg.runtime.result.Result`.

Numpy in, numpy out, no global state. A ``Grounder`` creates its backend (one ONNX Runtime session,
TensorRT context or torch model) and its tokenizer once; ``predict`` / ``predict_batch`` may be called
from several threads at once (ONNX Runtime sessions are thread-safe for ``run``; the TensorRT and torch
backends serialise ``run`` with a lock; pre- and post-processing use only per-call state). A
``PIL.Image`` passed in is only read, so several threads may share a decoded one; a lazily opened,
not yet loaded one (``Image.open`` without ``.load()``) must not be shared between threads.

Every failure a request can cause is a one-line :mod:`lvg.errors` exception (``InputError`` for the
image / text, ``ArtifactError`` / ``CheckpointError`` for the model); a failing request leaves the
``Grounder`` usable for the next one.

Example::

    from lvg import Grounder
    g = Grounder.load("model.onnx")              # or .engine / .plan / .safetensors
    r = g.predict("photo.jpg", "man on the left")
    r.mask, r.box, r.score                        # (H, W) bool, (x1, y1, x2, y2) or None, float
    r.save_overlay("overlay.png")
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lvg.config import ModelConfig, list_variants
from lvg.core.artifact import ArtifactInfo
from lvg.core.image import ImageSource, load_image
from lvg.core.model_file import ModelFile
from lvg.core.outputs import ModelOutput
from lvg.core.postprocess import check_mask_threshold, postprocess
from lvg.core.preprocess import Letterbox, preprocess_image, unletterbox
from lvg.core.tokenizer import Tokenizer, check_vocabulary, warn_truncated
from lvg.errors import ArtifactError, InputError, TokenizerError
from lvg.runtime.backends import Backend, open_backend
from lvg.runtime.result import Result

__all__ = ["TASKS", "Grounder", "default_model_path"]

#: ``ris``: segmentation mask; ``rec``: the box around it; ``gres``: also the no-target decision.
TASKS = ("ris", "rec", "gres")

#: Where a bundled model would live inside the package (shipped by a later release).
_BUNDLED = Path(__file__).resolve().parent.parent / "assets" / "default" / "model.onnx"


def default_model_path() -> Path:
    """The bundled model, or :class:`ArtifactError` ``no bundled model; pass --model`` when absent."""
    if not _BUNDLED.is_file():
        raise ArtifactError("no bundled model; pass --model PATH (an .onnx, .engine/.plan or .safetensors file)")
    return _BUNDLED


@dataclass(frozen=True)
class _Prepared:
    image: np.ndarray  # float32 (3, S, S)
    lb: Letterbox
    rgb: np.ndarray  # uint8 (H, W, 3)
    ids: np.ndarray  # int64 (L,)
    mask: np.ndarray  # bool (L,)
    truncated: bool  # the text had more word pieces than max_text_len holds


class Grounder:
    """Referring segmentation / grounding with a loaded model. Build it with :meth:`load`."""

    def __init__(self, backend: Backend, tokenizer: Tokenizer) -> None:
        self._backend = backend
        self._tokenizer = tokenizer
        model_file = backend.model_file
        check_vocabulary(tokenizer, model_file.config)
        if not model_file.is_own(tokenizer):
            raise TokenizerError(f"{model_file.path}: tokenizer {tokenizer.identity} does not match the model's "
                                 f"{model_file.info.tokenizer_identity or 'own (beside it)'}")

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | ModelFile | None = None,
        *,
        backend: str = "auto",
        device: str = "auto",
        tokenizer: str | os.PathLike[str] | None = None,
        variant: str | None = None,
    ) -> Grounder:
        """Load a model file.

        Args:
            path: ``.onnx`` (ONNX Runtime), ``.engine`` / ``.plan`` (TensorRT) or ``.safetensors`` (PyTorch);
                ``None`` = the bundled model.
            backend: ``"auto"`` (by suffix), ``"onnxruntime"``, ``"tensorrt"`` or ``"torch"``.
            device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``; ``"tensorrt"`` selects ONNX Runtime's
                TensorRT execution provider for ``.onnx`` files.
            tokenizer: a sentencepiece file overriding the one embedded in the artifact (needed for a
                checkpoint that carries none).
            variant: the variant the caller expects (e.g. ``"lvg-b-gres"``); a model of another variant
                is refused instead of silently giving another model's answers. ``None`` = any.

        Raises:
            ArtifactError: missing / empty / corrupt / foreign model file, a pickle file (``.pth``, ...),
                a model of another variant than ``variant``, or no tokenizer.
            CheckpointError: a ``.safetensors`` checkpoint whose tensors do not fit its config.
            MissingDependencyError: the backend's optional dependency is not installed (names the extra).
        """
        if variant is not None and variant not in list_variants():
            raise InputError(f"unknown variant {variant!r}; choose one of {', '.join(list_variants())}")
        be = open_backend(path if path is not None else default_model_path(), backend=backend, device=device)
        p = be.info.path
        if variant is not None and be.config.name != variant:
            found = be.config.name
            be.close()
            raise ArtifactError(f"{p} holds variant {found!r}, not the expected {variant!r}")
        tok = be.model_file.tokenizer(tokenizer)
        if tok is None:
            raise ArtifactError(
                f"{p} carries no tokenizer: pass tokenizer=PATH (--tokenizer) or put the .spm file beside it as "
                f"{p.name}.spm"
            )
        return cls(be, tok)

    # ------------------------------------------------------------------ properties

    @property
    def info(self) -> ArtifactInfo:
        return self._backend.info

    @property
    def config(self) -> ModelConfig:
        return self._backend.info.config

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    @property
    def default_task(self) -> str:
        """``"gres"`` for models with the no-target head, else ``"ris"``."""
        return "gres" if self.info.gres else "ris"

    def describe(self) -> dict[str, object]:
        """Model, backend and device, as put into every result's ``model`` field."""
        return {
            "variant": self.config.name,
            "path": str(self.info.path),
            "backend": self._backend.name,
            "device": self._backend.device,
            "precision": self.info.precision,
        }

    # ------------------------------------------------------------------ prediction

    def _task(self, task: str | None) -> str:
        if task is not None and not isinstance(task, str):
            raise InputError(f"task must be one of {', '.join(TASKS)} or None, got {type(task).__name__}")
        task = self.default_task if task is None else task.lower()
        if task not in TASKS:
            raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        if task == "gres" and not self.info.gres:
            raise InputError(f"task 'gres' needs a model with the no-target head; {self.config.name} has none")
        return task

    def _prepare(self, image: ImageSource, text: str) -> _Prepared:
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        pil = load_image(image)
        arr, lb = preprocess_image(pil, self.config.preprocess)
        max_len = self.config.preprocess.max_text_len
        ids, mask, truncated = self._tokenizer.encode_checked(text, max_len)
        if truncated:
            warn_truncated(text, max_len)
        return _Prepared(arr, lb, np.asarray(pil, dtype=np.uint8), ids, mask, truncated)

    def _run(self, prepared: Sequence[_Prepared], return_attention: bool) -> ModelOutput:
        images = np.stack([c.image for c in prepared])  # (B, 3, S, S)
        ids = np.stack([c.ids for c in prepared])  # (B, L)
        masks = np.stack([c.mask for c in prepared])  # (B, L)
        return self._backend.run_arrays(images, ids, masks, return_attention=return_attention)

    def predict(
        self,
        image: ImageSource,
        text: str,
        *,
        task: str | None = None,
        mask_threshold: float | None = None,
        return_attention: bool = False,
    ) -> Result:
        """Segment / ground the object ``text`` refers to in ``image``.

        Args:
            image: a file path, a ``PIL.Image.Image`` or a uint8 (H, W, 3) RGB numpy array.
            text: the referring expression (over-long text is truncated with a ``TextTruncatedWarning``).
            task: ``"ris"``, ``"rec"`` or ``"gres"`` (default: ``"gres"`` for GRES models, else ``"ris"``).
                Only ``"gres"`` applies the no-target decision; ``"ris"`` and ``"rec"`` always return the mask
                and its box.
            mask_threshold: override the model's ``preprocess.mask_threshold`` (0.35).
            return_attention: also return per-expression attention maps (torch backend only).

        Returns:
            A :class:`Result` at the image's original resolution.

        Raises:
            InputError: the image cannot be used (missing, a directory, empty, truncated, not an image,
                over :data:`lvg.core.image.MAX_PIXELS`), the text is not a string or is empty after
                normalisation, an unknown task, or a threshold outside [0, 1).
            ArtifactError: the model failed on inputs built to its own metadata, or returned outputs of
                the wrong shape or non-finite values (a file whose graph does not match its metadata).
        """
        return self.predict_batch(
            [image], [text], task=task, mask_threshold=mask_threshold, return_attention=return_attention
        )[0]

    def predict_batch(
        self,
        images: Sequence[ImageSource],
        texts: Sequence[str],
        *,
        task: str | None = None,
        mask_threshold: float | None = None,
        return_attention: bool = False,
    ) -> list[Result]:
        """:meth:`predict` over pairs ``(images[i], texts[i])`` in as few backend calls as the model allows.

        ``images`` and ``texts`` may be any iterables (lists, tuples, generators; a (B, H, W, 3) uint8 array is
        B images); a single image or a single string is refused with a hint to use :meth:`predict`.
        """
        images, texts = _as_list(images, "images"), _as_list(texts, "texts")
        if not isinstance(return_attention, bool):
            raise InputError(f"return_attention must be True or False, got {type(return_attention).__name__}")
        if len(images) != len(texts):
            raise InputError(f"got {len(images)} images but {len(texts)} texts")
        if not len(images):
            return []
        if return_attention and not self._backend.supports_attention:
            raise InputError("attention maps need the torch backend: load the .safetensors checkpoint")
        task = self._task(task)
        pre = self.config.preprocess
        threshold = pre.mask_threshold if mask_threshold is None else check_mask_threshold(mask_threshold)
        n = len(images)

        t0 = time.perf_counter()
        prepared = [self._prepare(img, txt) for img, txt in zip(images, texts)]
        t1 = time.perf_counter()
        out = self._run(prepared, return_attention)
        t2 = time.perf_counter()
        results = []
        for i, (p, text) in enumerate(zip(prepared, texts)):
            pred = postprocess(
                out.prob[i],
                p.lb,
                mask_threshold=threshold,
                no_target_logit=None if out.no_target_logit is None else float(out.no_target_logit[i]),
                no_target_threshold=pre.no_target_threshold,
                decide_no_target=task == "gres",
            )
            attention = None
            if out.attention is not None:
                # (1 + N, g, g) maps over the canvas -> (1 + N, H, W) over the original image.
                attention = np.stack([unletterbox(a, p.lb) for a in out.attention[i]])
            results.append(
                Result(
                    text=text, task=task, mask=pred.mask, box=pred.box, score=pred.score,
                    no_target=pred.no_target, prob=pred.prob, no_target_prob=pred.no_target_prob,
                    attention=attention, image=p.rgb, model=self.describe(), text_truncated=p.truncated,
                )
            )
        t3 = time.perf_counter()
        share = {
            "preprocess": (t1 - t0) * 1e3 / n,
            "inference": (t2 - t1) * 1e3 / n,
            "postprocess": (t3 - t2) * 1e3 / n,
            "total": (t3 - t0) * 1e3 / n,
        }
        if n > 1:
            share["batch"] = float(n)
        for r in results:
            r.timings = dict(share)
        return results

    def close(self) -> None:
        """Release the backend's resources."""
        self._backend.close()

    def __repr__(self) -> str:
        return f"Grounder({self.config.name!r}, backend={self._backend.name!r}, device={self._backend.device!r})"


def _as_list(items: object, what: str) -> list:
    """``items`` (any iterable of images or of texts) as a list; one image or one text is an :class:`InputError`."""
    if isinstance(items, (str, bytes)) or (what == "images" and isinstance(items, (str, os.PathLike))):
        raise InputError(f"predict_batch takes a sequence of {what}, got one {type(items).__name__}; use predict "
                         "for one")
    if isinstance(items, np.ndarray) and (what != "images" or items.ndim != 4):
        raise InputError(f"predict_batch takes a sequence of {what}; a numpy array of shape {items.shape} is one "
                         "image (a batch of images is a (B, H, W, 3) array): use predict for one")
    try:
        return list(items)  # type: ignore[call-overload]
    except TypeError:
        raise InputError(f"predict_batch takes a sequence of {what}, got {type(items).__name__}") from None
