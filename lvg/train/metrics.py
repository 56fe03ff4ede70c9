"""Evaluation metrics for RIS, REC and GRES (SPEC section 4). Numpy only.

All masks are compared at the original image resolution. Values are fractions in [0, 1] (multiply by
100 for the paper's tables). A metric whose denominator is empty (no samples, or no no-target samples
for N-acc) is ``None``.

- RIS: ``mIoU`` = mean per-sample IoU (IoU = 0 when the union is empty), ``oIoU`` = sum of
  intersections / sum of unions, ``prec@X`` = fraction of samples with IoU >= X, X in 0.5..0.9.
- REC: ``acc@0.5`` = fraction of samples whose predicted box has IoU >= 0.5 with the ground truth box;
  a missing prediction (``None``) is wrong.
- GRES (ReLA's definitions): ``gIoU`` = mean per-sample IoU where a no-target sample (empty ground
  truth) scores 1 if the prediction is empty, else 0; ``cIoU`` = sum I / sum U over all samples;
  ``N-acc`` = TP / (TP + FN) over no-target samples (TP: predicted empty); ``T-acc`` = fraction of
  target samples predicted non-empty.

:class:`MetricAccumulator` keeps only sums (plain ints / floats), so evaluation never stores masks and
distributed workers can combine states with :meth:`MetricAccumulator.merge` or by summing
:meth:`MetricAccumulator.state` dicts key by key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

__all__ = [
    "PREC_THRESHOLDS",
    "MetricAccumulator",
    "box_iou",
    "gres_metrics",
    "mask_iou",
    "rec_accuracy",
    "ris_metrics",
]

Task = Literal["ris", "rec", "gres"]
BoxLike = Sequence[float]

#: IoU thresholds of the RIS precision metrics ``prec@0.5`` .. ``prec@0.9``.
PREC_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)


def _prec_key(t: float) -> str:
    return f"prec@{t:.1f}"


def _inter_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    p = np.asarray(pred, dtype=bool)
    g = np.asarray(gt, dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground truth shape {g.shape}")
    inter = int(np.count_nonzero(p & g))
    union = int(np.count_nonzero(p | g))
    return inter, union


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two same-shape bool masks; 0.0 when both are empty (RIS convention)."""
    inter, union = _inter_union(pred, gt)
    return inter / union if union else 0.0


def box_iou(a: BoxLike | None, b: BoxLike | None) -> float:
    """IoU of two ``(x1, y1, x2, y2)`` edge-coordinate boxes (area = (x2 - x1) * (y2 - y1)).
    0.0 if either is ``None`` or the union is empty."""
    if a is None or b is None:
        return 0.0
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    area_a = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1)
    area_b = max(0.0, bx2 - bx1) * max(0.0, by2 - by1)
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


class MetricAccumulator:
    """Running sums for one task's metrics.

    ``task="ris"``: add (pred_mask, gt_mask); boxes are optional and, when given, ``acc@0.5`` is
    reported as well. ``task="rec"``: add (pred_box, gt_box); masks may be ``None``. ``task="gres"``:
    add (pred_mask, gt_mask) where an all-False gt mask means "no target".
    """

    _KEYS: tuple[str, ...] = (
        "n",  # samples with masks
        "sum_iou",  # sum of per-sample IoU (RIS) / gIoU (GRES)
        "sum_inter",
        "sum_union",
        *(f"n_iou_ge_{t:.1f}" for t in PREC_THRESHOLDS),
        "n_box",  # samples with a ground-truth box
        "n_box_correct",
        "n_no_target",
        "n_no_target_correct",  # TP: no-target gt, empty prediction
        "n_target",
        "n_target_correct",  # target gt, non-empty prediction
    )

    def __init__(self, task: Task = "ris") -> None:
        if task not in ("ris", "rec", "gres"):
            raise ValueError(f"task must be 'ris', 'rec' or 'gres', got {task!r}")
        self.task: Task = task
        self._s: dict[str, float | int] = {k: (0.0 if k == "sum_iou" else 0) for k in self._KEYS}

    def add(
        self,
        pred_mask: np.ndarray | None,
        gt_mask: np.ndarray | None,
        pred_box: BoxLike | None = None,
        gt_box: BoxLike | None = None,
    ) -> None:
        """Add one sample. Masks are bool (H, W) at the same resolution; boxes xyxy edge coordinates."""
        s = self._s
        if (pred_mask is None) != (gt_mask is None):
            raise ValueError("pass both pred_mask and gt_mask, or neither")
        if pred_mask is None and self.task != "rec":
            raise ValueError(f"task {self.task!r} needs masks")
        if pred_mask is not None and gt_mask is not None:
            inter, union = _inter_union(pred_mask, gt_mask)
            s["n"] += 1
            s["sum_inter"] += inter
            s["sum_union"] += union
            if self.task == "gres":
                gt_empty = not np.any(gt_mask)
                pred_empty = not np.any(pred_mask)
                if gt_empty:
                    s["n_no_target"] += 1
                    s["n_no_target_correct"] += int(pred_empty)
                    s["sum_iou"] += 1.0 if pred_empty else 0.0
                else:
                    s["n_target"] += 1
                    s["n_target_correct"] += int(not pred_empty)
                    s["sum_iou"] += inter / union
            else:
                iou = inter / union if union else 0.0
                s["sum_iou"] += iou
                for t in PREC_THRESHOLDS:
                    if iou >= t:
                        s[f"n_iou_ge_{t:.1f}"] += 1
        if gt_box is not None:
            s["n_box"] += 1
            s["n_box_correct"] += int(box_iou(pred_box, gt_box) >= 0.5)
        elif self.task == "rec":
            raise ValueError("task 'rec' needs a ground-truth box")

    def merge(self, other: MetricAccumulator) -> MetricAccumulator:
        """Add ``other``'s sums into this accumulator (same task); returns ``self``."""
        if other.task != self.task:
            raise ValueError(f"cannot merge a {other.task!r} accumulator into a {self.task!r} one")
        for k in self._KEYS:
            self._s[k] += other._s[k]
        return self

    def state(self) -> dict[str, float | int]:
        """The sums as a flat dict of plain numbers (all additive across workers)."""
        return dict(self._s)

    @classmethod
    def from_state(cls, task: Task, state: Mapping[str, float | int]) -> MetricAccumulator:
        """Rebuild an accumulator from :meth:`state` (e.g. after summing states from all ranks)."""
        acc = cls(task)
        missing = [k for k in cls._KEYS if k not in state]
        if missing:
            raise ValueError(f"metric state lacks {missing}")
        for k in cls._KEYS:
            acc._s[k] = float(state[k]) if k == "sum_iou" else int(round(float(state[k])))
        return acc

    def compute(self) -> dict[str, float | int | None]:
        """The task's metrics (see the module docstring for the keys)."""
        s = self._s
        n = int(s["n"])
        out: dict[str, float | int | None] = {}
        if self.task == "ris":
            out["mIoU"] = s["sum_iou"] / n if n else None
            out["oIoU"] = (s["sum_inter"] / s["sum_union"] if s["sum_union"] else 0.0) if n else None
            for t in PREC_THRESHOLDS:
                out[_prec_key(t)] = s[f"n_iou_ge_{t:.1f}"] / n if n else None
            out["n"] = n
            if s["n_box"]:
                out["acc@0.5"] = s["n_box_correct"] / s["n_box"]
                out["n_box"] = int(s["n_box"])
        elif self.task == "rec":
            nb = int(s["n_box"])
            out["acc@0.5"] = s["n_box_correct"] / nb if nb else None
            out["n"] = nb
        else:
            out["gIoU"] = s["sum_iou"] / n if n else None
            out["cIoU"] = (s["sum_inter"] / s["sum_union"] if s["sum_union"] else 0.0) if n else None
            nn, nt = int(s["n_no_target"]), int(s["n_target"])
            out["N-acc"] = s["n_no_target_correct"] / nn if nn else None
            out["T-acc"] = s["n_target_correct"] / nt if nt else None
            out["n"] = n
            out["n_no_target"] = nn
        return out


def ris_metrics(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> dict[str, float | int | None]:
    """RIS metrics over paired bool masks: ``mIoU``, ``oIoU``, ``prec@0.5`` .. ``prec@0.9``, ``n``."""
    _check_pairs(preds, gts)
    acc = MetricAccumulator("ris")
    for p, g in zip(preds, gts):
        acc.add(p, g)
    return acc.compute()


def rec_accuracy(
    pred_boxes: Sequence[BoxLike | None], gt_boxes: Sequence[BoxLike]
) -> dict[str, float | int | None]:
    """REC accuracy: ``acc@0.5`` (box IoU >= 0.5; a ``None`` prediction is wrong) and ``n``."""
    _check_pairs(pred_boxes, gt_boxes)
    acc = MetricAccumulator("rec")
    for p, g in zip(pred_boxes, gt_boxes):
        acc.add(None, None, p, g)
    return acc.compute()


def gres_metrics(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> dict[str, float | int | None]:
    """GRES metrics (ReLA): ``gIoU``, ``cIoU``, ``N-acc``, ``T-acc``, ``n``, ``n_no_target``.
    An all-False ground-truth mask is a no-target sample."""
    _check_pairs(preds, gts)
    acc = MetricAccumulator("gres")
    for p, g in zip(preds, gts):
        acc.add(p, g)
    return acc.compute()


def _check_pairs(a: Sequence[object], b: Sequence[object]) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} predictions but {len(b)} ground truths")
