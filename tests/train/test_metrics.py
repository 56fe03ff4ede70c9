"""RIS / REC / GRES metrics on hand-made examples (answers worked out in comments) and vs pycocotools."""

from __future__ import annotations

import numpy as np
import pytest

from lvg.train.metrics import (
    MetricAccumulator,
    box_iou,
    gres_metrics,
    mask_iou,
    rec_accuracy,
    ris_metrics,
)


def _rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_mask_iou_hand() -> None:
    a = _rect(4, 4, 0, 2, 0, 2)  # 4 px
    b = _rect(4, 4, 0, 2, 1, 3)  # 4 px, overlap 2 -> IoU 2 / 6
    assert mask_iou(a, b) == pytest.approx(1 / 3)
    assert mask_iou(a, a) == 1.0
    empty = np.zeros((4, 4), dtype=bool)
    assert mask_iou(empty, empty) == 0.0  # RIS convention: union 0 -> 0
    assert mask_iou(a, empty) == 0.0
    with pytest.raises(ValueError):
        mask_iou(a, np.zeros((3, 4), bool))


def test_mask_iou_matches_pycocotools() -> None:
    mask_util = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(1, 50, 2)
        p = rng.random((h, w)) < rng.random()
        g = rng.random((h, w)) < rng.random()
        if not (p | g).any():
            continue
        rp = mask_util.encode(np.asfortranarray(p.astype(np.uint8)))
        rg = mask_util.encode(np.asfortranarray(g.astype(np.uint8)))
        ref = float(mask_util.iou([rp], [rg], [0])[0, 0])
        assert mask_iou(p, g) == pytest.approx(ref, abs=1e-12)


def test_box_iou_hand() -> None:
    # (0,0,2,2) area 4 and (1,1,3,3) area 4 overlap in (1,1,2,2) area 1 -> 1 / 7
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 2, 2), (2, 0, 4, 2)) == 0.0  # touching edges share no area
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou(None, (0, 0, 1, 1)) == 0.0
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_ris_metrics_hand_oiou_differs_from_miou() -> None:
    # sample 1: small object, 1 of 2 px right: I=1, U=2 -> IoU 0.5
    # sample 2: big object, perfect: I=U=16 -> IoU 1.0
    # sample 3: both empty -> IoU 0 (RIS), I=U=0
    # sample 4: gt 4 px, pred 10 px containing it: I=4, U=10 -> IoU 0.4
    p1, g1 = _rect(4, 4, 0, 1, 0, 1), _rect(4, 4, 0, 1, 0, 2)
    p2 = g2 = np.ones((4, 4), dtype=bool)
    p3 = g3 = np.zeros((4, 4), dtype=bool)
    g4 = _rect(5, 5, 0, 2, 0, 2)
    p4 = _rect(5, 5, 0, 2, 0, 5)
    r = ris_metrics([p1, p2, p3, p4], [g1, g2, g3, g4])
    assert r["n"] == 4
    assert r["mIoU"] == pytest.approx((0.5 + 1.0 + 0.0 + 0.4) / 4)  # 0.475
    assert r["oIoU"] == pytest.approx((1 + 16 + 0 + 4) / (2 + 16 + 0 + 10))  # 21 / 28 = 0.75
    # IoUs 0.5, 1.0, 0.0, 0.4: >= 0.5 -> 2 of 4; >= 0.6.. 0.9 -> 1 of 4
    assert r["prec@0.5"] == 0.5
    for t in ("0.6", "0.7", "0.8", "0.9"):
        assert r[f"prec@{t}"] == 0.25


def test_prec_boundary_is_inclusive() -> None:
    # IoU exactly 0.6 (3 / 5) and 0.7 (7 / 10) count at their own threshold
    g = _rect(1, 10, 0, 1, 0, 5)
    p = _rect(1, 10, 0, 1, 0, 3)  # I=3, U=5
    g2 = _rect(1, 10, 0, 1, 0, 10)
    p2 = _rect(1, 10, 0, 1, 0, 7)  # I=7, U=10
    r = ris_metrics([p, p2], [g, g2])
    assert r["prec@0.6"] == 1.0 and r["prec@0.7"] == 0.5 and r["prec@0.8"] == 0.0


def test_rec_accuracy_hand() -> None:
    gts = [(0, 0, 10, 10), (0, 0, 10, 10), (0, 0, 10, 10), (5, 5, 6, 6)]
    preds = [
        (0, 0, 10, 5),  # I 50 / U 100 = 0.5 -> correct (>=)
        (0, 0, 10, 4),  # 40 / 100 -> wrong
        None,  # no box -> wrong
        (5, 5, 6, 6),  # exact -> correct
    ]
    r = rec_accuracy(preds, gts)
    assert r == {"acc@0.5": 0.5, "n": 4}


def test_gres_metrics_hand() -> None:
    empty = np.zeros((4, 4), dtype=bool)
    full = np.ones((4, 4), dtype=bool)
    half = _rect(4, 4, 0, 2, 0, 4)  # 8 px
    preds = [
        empty,  # gt empty, pred empty: no-target TP, gIoU 1, I=U=0
        half,  # gt empty, pred 8 px: no-target FN, gIoU 0, I=0 U=8
        half,  # gt full: target, predicted non-empty; I=8, U=16, IoU 0.5
        empty,  # gt half: target missed (predicted empty); I=0, U=8, IoU 0
    ]
    gts = [empty, empty, full, half]
    r = gres_metrics(preds, gts)
    assert r["n"] == 4 and r["n_no_target"] == 2
    assert r["gIoU"] == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    assert r["cIoU"] == pytest.approx((0 + 0 + 8 + 0) / (0 + 8 + 16 + 8))  # 8 / 32
    assert r["N-acc"] == 0.5  # TP 1 / (TP 1 + FN 1)
    assert r["T-acc"] == 0.5  # 1 of 2 target samples predicted non-empty


def test_undefined_metrics_are_none() -> None:
    assert ris_metrics([], [])["mIoU"] is None
    r = gres_metrics([np.ones((2, 2), bool)], [np.ones((2, 2), bool)])
    assert r["N-acc"] is None and r["T-acc"] == 1.0 and r["gIoU"] == 1.0
    with pytest.raises(ValueError):
        ris_metrics([np.ones((2, 2), bool)], [])


def test_accumulator_merge_and_state_equal_batch() -> None:
    rng = np.random.default_rng(3)
    preds = [rng.random((8, 9)) < 0.4 for _ in range(10)]
    gts = [rng.random((8, 9)) < 0.4 for _ in range(10)]
    gts[2] = np.zeros((8, 9), bool)
    preds[5] = np.zeros((8, 9), bool)
    for task, fn in (("ris", ris_metrics), ("gres", gres_metrics)):
        whole = fn(preds, gts)
        a, b = MetricAccumulator(task), MetricAccumulator(task)
        for i, (p, g) in enumerate(zip(preds, gts)):
            (a if i < 4 else b).add(p, g)
        # "all-reduce": sum the two state dicts key by key, as DDP would
        sa, sb = a.state(), b.state()
        assert all(isinstance(v, (int, float)) for v in sa.values())
        summed = MetricAccumulator.from_state(task, {k: sa[k] + sb[k] for k in sa})
        assert summed.compute() == pytest.approx(whole)
        assert a.merge(b).compute() == pytest.approx(whole)


def test_accumulator_rec_and_ris_with_boxes() -> None:
    acc = MetricAccumulator("rec")
    acc.add(None, None, (0, 0, 2, 2), (0, 0, 2, 2))
    acc.add(None, None, None, (0, 0, 2, 2))
    assert acc.compute() == {"acc@0.5": 0.5, "n": 2}
    ris = MetricAccumulator("ris")
    m = _rect(3, 3, 0, 2, 0, 2)
    ris.add(m, m, pred_box=(0, 0, 2, 2), gt_box=(0, 0, 2, 2))
    out = ris.compute()
    assert out["mIoU"] == 1.0 and out["acc@0.5"] == 1.0
    with pytest.raises(ValueError):
        MetricAccumulator("ris").add(None, None)
    with pytest.raises(ValueError):
        MetricAccumulator("ris").merge(MetricAccumulator("gres"))
    with pytest.raises(ValueError):
        MetricAccumulator("segm")  # type: ignore[arg-type]
