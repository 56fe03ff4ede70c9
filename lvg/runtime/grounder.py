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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from lvg.config import ModelConfig, list_variants, unknown_variant
from lvg.core.artifact import ArtifactInfo
from lvg.core.image import ImageSource, load_image
from lvg.core.model_file import ModelFile
from lvg.core.postprocess import check_mask_threshold, postprocess
from lvg.core.preprocess import Letterbox, preprocess_image, unletterbox
from lvg.core.tokenizer import Tokenizer, check_vocabulary, warn_truncated
from lvg.errors import ArtifactError, InputError, LVGError, TokenizerError
from lvg.runtime.backends import Backend, open_backend
from lvg.runtime.result import LOW_CONFIDENCE, Result
from lvg.runtime.stream import prefetch

__all__ = ["CHANNEL_ORDERS", "TASKS", "Grounder", "default_model_path"]

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
class _Frame:
    """One image, preprocessed."""

    image: np.ndarray  # float32 (3, S, S)
    lb: Letterbox
    rgb: np.ndarray  # uint8 (H, W, 3)
    ms: float  # time it took


@dataclass(frozen=True)
class _Text:
    """One text, tokenised."""

    ids: np.ndarray  # int64 (L,)
    mask: np.ndarray  # bool (L,)
    truncated: bool  # the text had more word pieces than max_text_len holds
    unknown: list[str] | None  # words the model never read in training (None: it records no vocabulary)


#: ``channel_order`` values: the order of the three channels of a numpy image.
CHANNEL_ORDERS = ("rgb", "bgr")

#: A no-target probability this close to its threshold makes the decision a low-confidence one.
_NO_TARGET_MARGIN = 0.15


def _channel_order(value: object) -> str:
    order = value.lower() if isinstance(value, str) else value
    if order not in CHANNEL_ORDERS:
        raise InputError(f"channel_order must be 'rgb' or 'bgr', got {value!r}")
    return order  # type: ignore[return-value]


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
        precision: str = "auto",
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
            precision: ``"auto"`` (bf16 on a CPU with bf16 instructions: OpenVINO for ``.onnx`` when the
                ``openvino`` extra is installed, bf16 weights for ``.safetensors``; fp32 elsewhere; an int8
                file's own int8), ``"fp32"``, ``"bf16"`` or ``"int8"``. One fp32 ``.onnx`` serves fp32 and
                bf16; int8 is a second file written by ``lvg export --int8`` (:mod:`lvg.core.precision`).

        Raises:
            ArtifactError: missing / empty / corrupt / foreign model file, a pickle file (``.pth``, ...),
                a model of another variant than ``variant``, or no tokenizer.
            CheckpointError: a ``.safetensors`` checkpoint whose tensors do not fit its config.
            MissingDependencyError: the backend's optional dependency is not installed (names the extra).
        """
        if variant is not None and variant not in list_variants():
            raise InputError(unknown_variant(variant))
        be = open_backend(path if path is not None else default_model_path(), backend=backend, device=device,
                          precision=precision)
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
            "precision": self._backend.precision,
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

    def _frame(self, image: ImageSource, channel_order: str) -> _Frame:
        t0 = time.perf_counter()
        if channel_order == "bgr":
            if not isinstance(image, np.ndarray):
                raise InputError(f"channel_order='bgr' applies to numpy arrays (OpenCV frames); a "
                                 f"{type(image).__name__} is decoded as RGB: leave channel_order='rgb'")
            if image.ndim == 3 and image.shape[-1] == 3:
                image = image[..., ::-1]  # (H, W, 3) BGR -> RGB; a 2-D gray array has no order
        pil = load_image(image)
        arr, lb = preprocess_image(pil, self.config.preprocess)
        return _Frame(arr, lb, np.asarray(pil, dtype=np.uint8), (time.perf_counter() - t0) * 1e3)

    def _text(self, text: str) -> _Text:
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        max_len = self.config.preprocess.max_text_len
        ids, mask, truncated = self._tokenizer.encode_checked(text, max_len)
        if truncated:
            warn_truncated(text, max_len)
        return _Text(ids, mask, truncated, self.info.domain.unknown_words(text))

    def unknown_words(self, text: str) -> list[str] | None:
        """The words of ``text`` the model never read in training, in order (``[]``: it knows them all);
        ``None`` when the model records no training vocabulary (see :mod:`lvg.core.domain`)."""
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        return self.info.domain.unknown_words(text)

    @property
    def description(self) -> str | None:
        """The model's one-line description of its training domain, ``None`` when it records none."""
        return self.info.domain.description

    def _settings(self, task: str | None, mask_threshold: float | None) -> tuple[str, float]:
        task = self._task(task)
        pre = self.config.preprocess
        return task, pre.mask_threshold if mask_threshold is None else check_mask_threshold(mask_threshold)

    def _finish(self, frames: Sequence[_Frame], texts: Sequence[str], encoded: Sequence[_Text], task: str,
                threshold: float, return_attention: bool = False) -> list[Result]:
        """Run the model on prepared frames and texts and post-process each answer into a :class:`Result`."""
        t1 = time.perf_counter()
        images = np.stack([f.image for f in frames])  # (B, 3, S, S)
        ids = np.stack([e.ids for e in encoded])  # (B, L)
        masks = np.stack([e.mask for e in encoded])  # (B, L)
        out = self._backend.run_arrays(images, ids, masks, return_attention=return_attention)
        t2 = time.perf_counter()
        pre = self.config.preprocess
        results = []
        for i, (f, e, text) in enumerate(zip(frames, encoded, texts)):
            pred = postprocess(
                out.prob[i], f.lb, mask_threshold=threshold,
                no_target_logit=None if out.no_target_logit is None else float(out.no_target_logit[i]),
                no_target_threshold=pre.no_target_threshold, decide_no_target=task == "gres",
            )
            attention = None
            if out.attention is not None:
                # (1 + N, g, g) maps over the canvas -> (1 + N, H, W) over the original image.
                attention = np.stack([unletterbox(a, f.lb) for a in out.attention[i]])
            close = task == "gres" and pred.no_target_prob is not None and (
                abs(pred.no_target_prob - pre.no_target_threshold) < _NO_TARGET_MARGIN)
            low = close or (not pred.no_target and (pred.box is None or pred.score < LOW_CONFIDENCE))
            results.append(Result(
                text=text, task=task, mask=pred.mask, box=pred.box, score=pred.score, no_target=pred.no_target,
                prob=pred.prob, no_target_prob=pred.no_target_prob, attention=attention, image=f.rgb,
                model=self.describe(), text_truncated=e.truncated, instances=pred.regions, unknown_words=e.unknown,
                low_confidence=bool(low),
            ))
        t3 = time.perf_counter()
        n = len(frames)
        for f, r in zip(frames, results):
            infer_ms, post_ms = (t2 - t1) * 1e3 / n, (t3 - t2) * 1e3 / n
            r.timings = {"preprocess": f.ms, "inference": infer_ms, "postprocess": post_ms,
                         "total": f.ms + infer_ms + post_ms}
            if n > 1:
                r.timings["batch"] = float(n)
        return results

    def predict(
        self,
        image: ImageSource,
        text: str,
        *,
        task: str | None = None,
        mask_threshold: float | None = None,
        return_attention: bool = False,
        channel_order: str = "rgb",
    ) -> Result:
        """Segment / ground the object ``text`` refers to in ``image``.

        Args:
            image: a file path, a ``PIL.Image.Image`` or a uint8 (H, W, 3) numpy array (RGB, or BGR with
                ``channel_order="bgr"``, as OpenCV gives frames) or (H, W) gray.
            text: the referring expression (over-long text is truncated with a ``TextTruncatedWarning``).
            task: ``"ris"``, ``"rec"`` or ``"gres"`` (default: ``"gres"`` for GRES models, else ``"ris"``).
                Only ``"gres"`` applies the no-target decision; ``"ris"`` and ``"rec"`` always return the mask
                and its box.
            mask_threshold: override the model's ``preprocess.mask_threshold`` (0.35).
            return_attention: also return per-expression attention maps (torch backend only).
            channel_order: ``"rgb"`` or ``"bgr"``: the channel order of a numpy ``image`` (paths and PIL images
                are decoded as RGB; ``"bgr"`` with one is an :class:`InputError`).

        Returns:
            A :class:`Result` at the image's original resolution (``result.image`` is RGB whatever the input).

        Raises:
            InputError: the image cannot be used (missing, a directory, empty, truncated, not an image,
                over :data:`lvg.core.image.MAX_PIXELS`), the text is not a string or is empty after
                normalisation, an unknown task or channel order, or a threshold outside [0, 1).
            ArtifactError: the model failed on inputs built to its own metadata, or returned outputs of
                the wrong shape or non-finite values (a file whose graph does not match its metadata).
        """
        (result,) = self.predict_batch(
            [image], [text], task=task, mask_threshold=mask_threshold, return_attention=return_attention,
            channel_order=channel_order,
        )
        return cast(Result, result)  # on_error="raise": an error was raised, not returned

    def predict_batch(
        self,
        images: Sequence[ImageSource],
        texts: Sequence[str],
        *,
        task: str | None = None,
        mask_threshold: float | None = None,
        return_attention: bool = False,
        channel_order: str = "rgb",
        on_error: str = "raise",
    ) -> list[Result | LVGError]:
        """:meth:`predict` over pairs ``(images[i], texts[i])`` in as few backend calls as the model allows.

        ``images`` and ``texts`` may be any iterables (lists, tuples, generators; a (B, H, W, 3) uint8 array is
        B images); a single image or a single string is refused with a hint to use :meth:`predict`.
        ``channel_order`` applies to every numpy image of the batch.

        ``on_error``: ``"raise"``: a pair whose image or text cannot be used raises its :class:`InputError`;
        ``"yield"``: that pair's place in the list holds the error and the other pairs still share one backend
        call. Errors of the model itself (:class:`ArtifactError`) are raised either way.
        """
        _check_on_error(on_error)
        images, texts = _as_list(images, "images"), _as_list(texts, "texts")
        if not isinstance(return_attention, bool):
            raise InputError(f"return_attention must be True or False, got {type(return_attention).__name__}")
        if len(images) != len(texts):
            raise InputError(f"got {len(images)} images but {len(texts)} texts")
        if not len(images):
            return []
        if return_attention and not self._backend.supports_attention:
            raise InputError("attention maps need the torch backend: load the .safetensors checkpoint")
        task, threshold = self._settings(task, mask_threshold)
        order = _channel_order(channel_order)
        pairs: list[tuple[_Frame, _Text] | LVGError] = []
        for img, text in zip(images, texts):
            try:
                pairs.append((self._frame(img, order), self._text(text)))
            except LVGError as exc:
                if on_error == "raise":
                    raise
                pairs.append(exc)
        return self._answer(pairs, texts, task, threshold, return_attention)

    def stream(
        self,
        frames: Iterable[ImageSource],
        text: str,
        *,
        task: str | None = None,
        mask_threshold: float | None = None,
        channel_order: str = "rgb",
        batch_size: int = 1,
        on_error: str = "raise",
    ) -> Iterator[Result | LVGError]:
        """One :class:`Result` per frame of ``frames`` (any iterable: a camera generator, a list of paths, a
        (N, H, W, 3) array), in order, for one ``text``; while the model runs on a frame, a background thread
        already decodes and preprocesses the next ones (ONNX Runtime releases the GIL while it computes).

        Args:
            frames: images as :meth:`predict` takes them; read lazily, at most ``2 * batch_size`` ahead.
            text: the expression, tokenised once for the whole stream.
            task, mask_threshold, channel_order: as for :meth:`predict`.
            batch_size: frames per backend call (1: lowest latency per frame).
            on_error: ``"raise"``: a frame that cannot be used raises its :class:`InputError` and ends the
                stream; ``"yield"``: the error is yielded in that frame's place and the stream goes on.

        Raises:
            InputError: bad arguments (at the first ``next``), or a bad frame with ``on_error="raise"``.
            Whatever iterating ``frames`` raises is raised here, in the consumer's thread.
        """
        _check_on_error(on_error)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        task, threshold = self._settings(task, mask_threshold)
        order = _channel_order(channel_order)
        encoded = self._text(text)
        for chunk in prefetch(frames, lambda img: self._frame(img, order), batch_size):
            errors = [i for i, item in enumerate(chunk) if isinstance(item, LVGError)]
            if on_error == "raise" and errors:
                chunk = chunk[:errors[0] + 1]  # the frames before the bad one are still answered
            pairs = [item if isinstance(item, LVGError) else (item, encoded) for item in chunk]
            for answer in self._answer(pairs, [text] * len(chunk), task, threshold):
                if isinstance(answer, LVGError) and on_error == "raise":
                    raise answer
                yield answer

    def _answer(self, pairs: Sequence[tuple[_Frame, _Text] | LVGError], texts: Sequence[str], task: str,
                threshold: float, return_attention: bool = False) -> list[Result | LVGError]:
        """One :class:`Result` per prepared pair, in order, from one backend call; an error stays in its place."""
        out: list[Result | LVGError | None] = [p if isinstance(p, LVGError) else None for p in pairs]
        good = [(i, *p) for i, p in enumerate(pairs) if not isinstance(p, LVGError)]
        if good:
            done = self._finish([f for _, f, _ in good], [texts[i] for i, _, _ in good], [e for _, _, e in good],
                                task, threshold, return_attention)
            for (i, _, _), result in zip(good, done):
                out[i] = result
        return out  # type: ignore[return-value]  # every None was filled above

    def close(self) -> None:
        """Release the backend's resources."""
        self._backend.close()

    def __repr__(self) -> str:
        return f"Grounder({self.config.name!r}, backend={self._backend.name!r}, device={self._backend.device!r})"


def _check_on_error(on_error: object) -> None:
    if on_error not in ("raise", "yield"):
        raise InputError(f"on_error must be 'raise' or 'yield', got {on_error!r}")


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
