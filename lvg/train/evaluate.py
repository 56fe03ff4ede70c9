"""Evaluation of a model on a REFER / gREFER split at the ORIGINAL image resolution (SPEC 4).

Every sentence of the split is one evaluation sample. The model's ``(P, P)`` probability map (``P =
cfg.prob_size``) is mapped back through the image's letterbox (:func:`lvg.core.postprocess.postprocess`, the
runtime's own code, so the numbers match what ``lvg infer`` would produce), thresholded at the variant's
``mask_threshold``, and compared with the ground-truth mask decoded at the original size; the REC box is the tight
box of that mask. GRES uses the no-target head (``sigmoid(logit) > no_target_threshold`` -> empty prediction).

The model is anything that runs numpy batches (:class:`lvg.core.outputs.ArrayModel`): a runtime backend
(ONNX Runtime, TensorRT, or the torch backend of a checkpoint, as ``lvg infer`` runs them) or a live model
behind :class:`lvg.modeling.runner.ArrayRunner` (training). For latent variants the result also holds
``per_expression``: the same mask metrics for each expression's own map (input expression and every latent
one, thresholded before averaging), as in the paper's Table 11, from models that return those maps (the
PyTorch model; an export holds only the averaged map).

``text_swap=True`` adds a control, ``text_swap``: the same mask metrics when every image is paired with the
sentence of another image in its batch and scored against its own ground truth. A model that reads its text
scores far lower there; equal numbers mean the masks ignore the sentence (a model trained from scratch can
reach a fair training loss that way, by segmenting every salient object).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lvg._progress import progress
from lvg.config import PreprocessConfig
from lvg.core.outputs import ArrayModel, ModelOutput
from lvg.core.postprocess import Prediction, box_from_mask, check_mask_threshold, postprocess
from lvg.core.preprocess import Letterbox, letterbox_geometry, unletterbox
from lvg.train.distributed import DistInfo, eval_shard, gather_objects
from lvg.train.metrics import MetricAccumulator

_MAIN_KEYS = {"ris": ("mIoU", "oIoU"), "rec": ("acc@0.5",), "gres": ("gIoU", "cIoU")}


def select_sentences(n: int, max_sentences: int) -> list[int]:
    """All ``n`` indices, or ``max_sentences`` of them spread evenly over the split (deterministic)."""
    if max_sentences <= 0 or max_sentences >= n:
        return list(range(n))
    return sorted({(i * n) // max_sentences for i in range(max_sentences)})


def evaluate(
    model: ArrayModel,
    source: Any,
    split: str,
    tokenizer: Any,
    task: str | None = None,
    batch_size: int = 8,
    *,
    max_sentences: int = 0,
    per_expression: bool = True,
    text_swap: bool = False,
    mask_threshold: float | None = None,
    dist_info: DistInfo | None = None,
    show_progress: bool | None = False,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` on every sentence of ``split`` of ``source``.

    Args:
        model: what runs the model on numpy batches (:class:`~lvg.core.outputs.ArrayModel`): a runtime
            backend, or a live model in an :class:`~lvg.modeling.runner.ArrayRunner`.
        source: the split's ``ReferSource`` (:func:`lvg.train.data.open_dataset` with ``split=split``).
        split: its name, e.g. ``"val"``, ``"testA"`` (must match ``source.split`` when that is set).
        tokenizer: a :class:`lvg.core.tokenizer.Tokenizer` matching the model's vocabulary.
        task: ``"ris"`` (mIoU, oIoU, prec@X and REC acc@0.5), ``"rec"`` (acc@0.5 only) or ``"gres"``
            (gIoU, cIoU, N-acc, T-acc); ``None`` = "gres" for GRES variants, else "ris".
        batch_size: sentences per forward pass.
        max_sentences: evaluate an evenly spread subset of this many sentences (0 = all).
        per_expression: add ``per_expression`` metrics for latent variants (models that return each
            expression's map: ``model.supports_expressions``).
        text_swap: add the ``text_swap`` control (module docstring); a second forward pass per batch. A
            sentence whose batch holds no other image is left out of the control only.
        mask_threshold: threshold of the probability maps, in [0, 1) (default: the model's
            ``preprocess.mask_threshold``, as ``lvg infer`` uses); the result names the one used.
        dist_info: under DDP, each rank evaluates every K-th sentence and the sums are gathered, so every
            rank returns the metrics of the whole split.
        show_progress: progress bar on stderr (rank 0 only); None = when stderr is a terminal.
        should_stop: asked before each batch that every rank has (under DDP a collective, e.g.
            :func:`~lvg.train.distributed.any_rank`); True abandons the evaluation with
            :class:`EvaluationStopped`, so that a stop signal (a scheduler's SIGTERM and its grace period)
            need not wait for a whole pass.

    Returns:
        ``{"task", "split", "mask_threshold", "n", <metrics>...,
        ["per_expression": {"input": {...}, "latent_1": {...}, ...}],
        ["text_swap": {"n", "mIoU", "oIoU"} (RIS / REC) or {"n", "gIoU", "cIoU"} (GRES)]}``.
        Metric values are fractions in [0, 1] (``None`` where a denominator is empty).
    """
    from lvg.train.torch_data import GroundingDataset

    info = dist_info or DistInfo()
    cfg = model.config
    threshold = cfg.preprocess.mask_threshold if mask_threshold is None else check_mask_threshold(mask_threshold)
    task = task or ("gres" if cfg.head.gres else "ris")
    if task not in _MAIN_KEYS:
        raise ValueError(f"task must be 'ris', 'rec' or 'gres', got {task!r}")
    if getattr(source, "split", None) not in (None, split):
        raise ValueError(f"source holds split {source.split!r}, not {split!r}")
    dataset = GroundingDataset.for_model(source, cfg, tokenizer=tokenizer, train=False)
    selected = select_sentences(len(dataset), max_sentences)
    indices = [selected[i] for i in eval_shard(len(selected), info)]
    n_expr = 1 + cfg.latent.num_expressions
    scores = _Scores(task, threshold, cfg.preprocess, source,
                     expressions=n_expr if per_expression and n_expr > 1 and model.supports_expressions else 0,
                     text_swap=text_swap)

    batches = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    # Every rank holds at least this many batches, so all ranks ask should_stop equally often.
    asked = len(selected) // info.world_size // batch_size
    bar = progress(batches, desc=f"eval {split}", disable=True if not info.is_main else
                   (None if show_progress is None else not show_progress))
    for b, chunk in enumerate(bar):
        if should_stop is not None and b < asked and should_stop():
            raise EvaluationStopped(f"evaluation of {split} stopped after {b} of {len(batches)} batches")
        items = [dataset.arrays(i) for i in chunk]
        image = np.stack([it["image"] for it in items])  # (B, 3, S, S)
        ids = np.stack([it["text_ids"] for it in items])  # (B, L)
        mask = np.stack([it["text_mask"] for it in items])  # (B, L)
        out = model.run_arrays(image, ids, mask, return_expressions=bool(scores.expressions))
        samples = [source.samples[it["sample_index"]] for it in items]
        partner = _swap_partners([smp.image_id for smp in samples]) if text_swap else [None] * len(samples)
        swapped = None
        if any(k is not None for k in partner):
            # Sentences without a partner keep their own (their swapped result is never recorded).
            order = np.array([j if k is None else k for j, k in enumerate(partner)])
            swapped = model.run_arrays(image, ids[order], mask[order])
        for j, sample in enumerate(samples):
            scores.add(sample, out, j, swapped if partner[j] is not None else None)
    return {"task": task, "split": split, "mask_threshold": threshold, **scores.result(info)}


class EvaluationStopped(Exception):
    """:func:`evaluate` was abandoned because ``should_stop`` said so."""


class _Scores:
    """The metric accumulators of one evaluation, and how one sample's outputs feed them."""

    def __init__(self, task: str, threshold: float, pre: PreprocessConfig, source: Any, *, expressions: int,
                 text_swap: bool) -> None:
        self.task, self.threshold, self.pre, self.source = task, threshold, pre, source
        self.main = MetricAccumulator(task)  # type: ignore[arg-type]
        # The per-expression and text-swap controls score masks only: RIS metrics (GRES ones for GRES).
        self.mask_task = "gres" if task == "gres" else "ris"
        self.expressions = [MetricAccumulator(self.mask_task) for _ in range(expressions)]  # type: ignore[arg-type]
        self.swap = MetricAccumulator(self.mask_task) if text_swap else None  # type: ignore[arg-type]

    def predict(self, out: ModelOutput, j: int, lb: Letterbox) -> Prediction:
        """Sample ``j``'s prediction at its original resolution, as ``lvg infer`` would return it."""
        logit = None if out.no_target_logit is None else float(out.no_target_logit[j])
        return postprocess(out.prob[j], lb, mask_threshold=self.threshold, no_target_logit=logit,
                           no_target_threshold=self.pre.no_target_threshold, decide_no_target=self.task == "gres")

    def add(self, sample: Any, out: ModelOutput, j: int, swapped: ModelOutput | None) -> None:
        """Score row ``j`` of ``out`` (and of ``swapped``, the same image with another image's sentence)."""
        lb = letterbox_geometry(sample.width, sample.height, self.pre.size)
        gt_mask = np.asarray(self.source.mask(sample), dtype=bool)
        pred = self.predict(out, j, lb)
        gt_box = None if self.task == "gres" else _gt_box(self.source, sample, gt_mask)
        if self.task == "rec":
            self.main.add(None, None, pred.box, gt_box)
        elif self.task == "ris":
            self.main.add(pred.mask, gt_mask, pred.box, gt_box)
        else:
            self.main.add(pred.mask, gt_mask)
        if swapped is not None and self.swap is not None:
            self.swap.add(self.predict(swapped, j, lb).mask, gt_mask)
        for e, acc in enumerate(self.expressions):
            if pred.no_target:
                m = np.zeros_like(gt_mask)
            else:
                m = unletterbox(out.expression_prob[j, e], lb) > np.float32(self.threshold)  # type: ignore[index]
            acc.add(m, gt_mask)

    def result(self, info: DistInfo) -> dict[str, Any]:
        """The metrics over every rank's samples (see :func:`evaluate`'s Returns)."""
        keys = _MAIN_KEYS[self.mask_task]
        result: dict[str, Any] = _gather(self.main, self.task, info).compute()
        if self.expressions:
            per: dict[str, Any] = {}
            for e, acc in enumerate(self.expressions):
                metrics = _gather(acc, self.mask_task, info).compute()
                per["input" if e == 0 else f"latent_{e}"] = {k: metrics[k] for k in keys}
            result["per_expression"] = per
        if self.swap is not None:
            metrics = _gather(self.swap, self.mask_task, info).compute()
            result["text_swap"] = {"n": metrics["n"], **{k: metrics[k] for k in keys}}
        return result


def _swap_partners(image_ids: list[int]) -> list[int | None]:
    """For each position, the next position (cyclically) whose image differs; None when every one is the same.

    Consecutive sentences often describe the same object, so a plain roll would often swap in a sentence
    that is just as true for the image.
    """
    n = len(image_ids)
    out: list[int | None] = []
    for j in range(n):
        out.append(next((k % n for k in range(j + 1, j + n) if image_ids[k % n] != image_ids[j]), None))
    return out


def _gt_box(source: Any, sample: Any, gt_mask: np.ndarray) -> Any:
    """The dataset's ground-truth box (xyxy); falls back to the tight box of the mask."""
    box = source.box(sample) if hasattr(source, "box") else None
    return box if box is not None else box_from_mask(gt_mask)


def _gather(acc: MetricAccumulator, task: str, info: DistInfo) -> MetricAccumulator:
    if not info.enabled:
        return acc
    states = gather_objects(acc.state(), info)
    total = MetricAccumulator(task)  # type: ignore[arg-type]
    for st in states:
        total.merge(MetricAccumulator.from_state(task, st))  # type: ignore[arg-type]
    return total


__all__ = ["EvaluationStopped", "evaluate"]
