"""benchmarks/bench_synth_kinds.py: the object scoring on hand-made masks, and a real run on tiny data."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_synth_kinds.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_synth_kinds import (  # noqa: E402
    candidates,
    covered,
    head_miss,
    near_edge,
    score_objects,
    shape_match_reads,
)


def test_score_objects_by_hand() -> None:
    left = np.zeros((4, 8), bool)
    left[:, :4] = True
    right = ~left
    assert score_objects(left, [left, right]) == (0, 1.0)
    assert score_objects(left, [right, left]) == (1, 1.0)
    # Mostly the right half plus one column of the left: IoU 16/20 with `right`, 4/32 with `left`.
    pred = right.copy()
    pred[:, 3] = True
    picked, best = score_objects(pred, [left, right])
    assert picked == 1 and best == pytest.approx(16 / 20)
    assert score_objects(np.zeros_like(left), [left, right]) == (None, 0.0)  # an empty mask picks none
    assert covered(pred, left) == pytest.approx(4 / 16) and covered(pred, right) == 1.0


def test_near_edge_by_hand() -> None:
    target = np.zeros((40, 40), bool)
    target[10:30, 10:30] = True
    shifted = np.roll(target, 2, axis=1)  # two columns wrong on each side, all at the edge
    assert near_edge(shifted, target) == 1.0
    blob = target.copy()
    blob[0:4, 35:40] = True  # 20 wrong pixels 5+ away from the square
    assert near_edge(blob, target) == 0.0
    both = shifted | blob  # the target, 40 pixels past its right edge and 20 far: two thirds at the edge
    assert near_edge(both, target) == pytest.approx(40 / 60)
    # Within 1 pixel: the wrong column next to each side (20 + 20) and the two ends of the inner missing column,
    # which touch the top and bottom edges.
    assert near_edge(shifted, target, radius=1) == pytest.approx(42 / 80)
    assert near_edge(target, target) is None


def test_candidates_follow_the_head_noun_phrase() -> None:
    scene = [{"attributes": {"shape": "star", "colour": "green", "size": "large", "texture": "solid"}},
             {"attributes": {"shape": "star", "colour": "green", "size": "small", "texture": "dotted"}},
             {"attributes": {"shape": "circle", "colour": "green", "size": "large", "texture": "solid"}},
             {"attributes": {"shape": "star", "colour": "red", "size": "large", "texture": "solid"}}]
    assert candidates("the leftmost green star", scene) == [0, 1]
    assert candidates("the big star left of the green circle", scene) == [0, 3]
    assert candidates("the green shape at the top", scene) == [0, 1, 2]


def test_head_miss_names_what_the_pick_gets_wrong() -> None:
    scene = [{"attributes": {"shape": "star", "colour": "green", "size": "large", "texture": "solid"}},
             {"attributes": {"shape": "circle", "colour": "green", "size": "small", "texture": "solid"}},
             {"attributes": {"shape": "circle", "colour": "red", "size": "large", "texture": "dotted"}}]
    head = {"colour": "green", "shape": "star"}  # "the green star left of the red circle"
    assert head_miss(head, scene, 0) == []  # fits the head
    assert head_miss(head, scene, 1) == ["shape"]
    assert sorted(head_miss(head, scene, 2)) == ["colour", "shape"]
    assert head_miss(head, scene, None) == ["no object"]
    assert head_miss({}, scene, 2) == []  # "the shape at the top": any object fits


def _bench_untrained(tmp_path: Path, variant: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """The bench's run over 12 sentences of a tiny synthetic dataset with an untrained ``variant``: the
    process and the JSON it wrote."""
    import torch

    from lvg.modeling import build_model, save_checkpoint
    from lvg.train.synth import generate

    data = generate(tmp_path / "data", images=6, seed=5, size_range=(96, 160), splits=(("val", 1.0),)).out_dir
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model(variant), tmp_path / "run" / "last.safetensors")
    proc = subprocess.run([sys.executable, str(BENCH), "--ckpt", str(ckpt), "--data", str(data),
                           "--max-sentences", "12", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, json.loads((tmp_path / "out" / "synth_kinds_run.json").read_text())


def test_run_on_a_tiny_synthetic_dataset(tmp_path: Path) -> None:
    proc, result = _bench_untrained(tmp_path, "lvg-tiny")
    rows = result["kinds"]
    assert rows["all"]["n"] == 12
    assert sum(rows[k]["n"] for k in ("attribute", "position", "relation")) == 12
    for row in rows.values():
        if row["n"]:
            # IoU with the target can never beat the IoU with the best-matching object (the target is one).
            assert 0.0 <= row["mIoU"] <= row["best_object_IoU"] + 1e-12 <= 1.0 + 1e-12
            assert 0.0 <= row["right_object"] <= 1.0 and 1 / 6 <= row["chance"] <= 1 / 2
            # the target fits its own head phrase, so a right pick is a candidate and chance | candidate
            # is at least chance over the whole scene
            assert row["right_object"] <= row["candidate"] + 1e-12 <= 1.0 + 1e-12
            assert row["chance"] - 1e-12 <= row["chance_candidate"] <= 1.0
            assert 0.0 <= row["covered_target"] <= 1.0 and 0.0 <= row["covered_other_candidates"] <= 1.0
            assert row["chance"] - 1e-12 <= row["chance_given_candidate"] <= 1.0
    # Every attribute expression is counted under each attribute word it uses, or under "none".
    used = result["attribute_words"]
    assert set(used) <= {"colour", "size", "texture", "none"}
    assert rows["attribute"]["n"] <= sum(r["n"] for r in used.values()) <= 3 * rows["attribute"]["n"]
    assert all(0.0 <= r["right_object"] <= 1.0 for r in used.values())
    # The size breakdown covers exactly the right picks, and their IoU with the target is the best IoU.
    right = sum(round(rows[k]["right_object"] * rows[k]["n"]) for k in ("attribute", "position", "relation"))
    assert sum(r["n"] for r in result["iou_by_size"].values()) == right
    assert set(result["iou_by_size"]) <= {"small", "large"}
    assert all(0.0 < r["IoU"] <= 1.0 and 0.0 <= r["near_edge"] <= 1.0 for r in result["iou_by_size"].values())
    # The right-object rate by size covers every sentence, and its right picks are the size breakdown's.
    by_size = result["right_object_by_size"]
    assert sum(r["n"] for r in by_size.values()) == rows["all"]["n"]
    assert {k: round(r["right_object"] * r["n"]) for k, r in by_size.items() if round(r["right_object"] * r["n"])} \
        == {k: r["n"] for k, r in result["iou_by_size"].items()}
    # Picks off the head are exactly the picks that are not candidates; each is counted under what it misses.
    for kind in ("attribute", "position", "relation"):
        off = round((1 - rows[kind]["candidate"]) * rows[kind]["n"]) if rows[kind]["n"] else 0
        miss = result["head_misses"].get(kind, {"n": 0})
        assert miss["n"] == off
        shares = {k: v for k, v in miss.items() if k != "n"}
        assert set(shares) <= {"no object", "shape", "colour", "size", "texture"}
        assert all(0.0 < v <= 1.0 for v in shares.values())
        assert off == 0 or sum(shares.values()) >= 1.0 - 1e-12  # every miss differs in something
    n_shape = sum(round(m.get("shape", 0.0) * m["n"]) for m in result["head_misses"].values())
    assert sum(c["n"] for c in result["shape_confusions"]) <= n_shape
    assert all(c["named"] != c["picked"] for c in result["shape_confusions"])
    # Empty answers are exactly the "no object" picks off the head, each with its sentence and target.
    n_empty = sum(round(m.get("no object", 0.0) * m["n"]) for m in result["head_misses"].values())
    assert len(result["empty_picks"]) == n_empty
    for e in result["empty_picks"]:
        assert e["kind"] in rows and e["text"] and e["target_pixels"] > 0 and e["fitting_objects"] >= 1
        assert 0.0 <= e["max_prob"] <= 1.0  # over the whole map, letterbox padding included
    assert all(words in proc.stdout for words in ("right | candidate", "attribute words", "near the edge",
                                                  "shape confusions", "wrote"))
    assert result["shape_match"] == {}  # lvg-tiny has no shape match


def test_shape_match_reads_by_hand() -> None:
    import torch

    from lvg.train.synth.objects import SHAPES
    from lvg.train.words import ATTRIBUTE_WORDS

    assert ATTRIBUTE_WORDS["shape"] == SHAPES  # the word classifier's classes are 1 + the patch classifier's
    grid, side = 3, 12  # a 3x3 patch grid on a 12x12 target map: 4x4 cells per patch
    target = np.zeros((2, side, side), np.float32)
    target[0, :8, :8] = 1.0  # patches 0, 1, 3, 4 fully covered
    target[1, 5:7, 9:11] = 1.0  # under a quarter of patch 5: the most covered patch stands in
    items = [{"target": target[0]}, {"target": target[1]}]
    word = torch.full((2, 1 + len(SHAPES)), -5.0)
    word[0, 1 + SHAPES.index("star")] = 5.0  # names "star": right
    word[1, 0] = 5.0  # names no shape, but the sentence names "circle": wrong
    patch = torch.zeros(2, grid * grid, len(SHAPES))
    patch[0, [0, 1, 3, 4], SHAPES.index("star")] = 4.0  # the target's patches say star
    patch[0, [2, 5, 6, 7, 8], SHAPES.index("circle")] = 9.0  # the others, louder, say circle: not counted
    patch[1, 5, SHAPES.index("square")] = 4.0  # the small target's patch says square, the target is a hexagon
    sums: dict = defaultdict(lambda: defaultdict(float))
    shape_match_reads({"shape_word_logits": word, "patch_shape_logits": patch}, items,
                      [{"shape": "star"}, {"shape": "circle", "colour": "red"}],
                      [{"shape": "star", "size": "large"}, {"shape": "hexagon", "size": "small"}], grid, sums)
    assert {k: dict(v) for k, v in sums.items()} == {
        "word:shape": {"n": 2, "right": 1.0}, "target:large": {"n": 1, "right": 1.0},
        "target:small": {"n": 1, "right": 0.0}}
    sums.clear()
    shape_match_reads({"prob": torch.zeros(2, side, side)}, items, [{}, {}], [{}, {}], grid, sums)
    assert not sums  # no shape match: nothing counted


def test_run_reads_the_shape_match(tmp_path: Path) -> None:
    proc, result = _bench_untrained(tmp_path, "lvg-tiny-xy-stem-relpos-branch-tokens-ctx-match")
    reads = result["shape_match"]
    assert set(reads) <= {"word:shape", "word:none", "target:large", "target:small"}
    # every sentence is read once by each classifier
    assert sum(v["n"] for k, v in reads.items() if k.startswith("word:")) == 12
    assert sum(v["n"] for k, v in reads.items() if k.startswith("target:")) == 12
    assert all(0.0 <= v["right"] <= 1.0 for v in reads.values())
    assert "shape match, right:" in proc.stdout


def test_without_shape_match_scores_the_map_with_the_term_left_out(tmp_path: Path) -> None:
    import torch
    from _synth_checkpoint import forward, open_checkpoint
    from bench_synth_kinds import without_shape_match

    from lvg.modeling import build_model, save_checkpoint
    from lvg.train.synth import generate

    data = generate(tmp_path / "data", images=4, seed=5, size_range=(96, 160), splits=(("val", 1.0),)).out_dir
    torch.manual_seed(0)
    model = build_model("lvg-tiny-xy-stem-relpos-branch-tokens-ctx-match")
    with torch.no_grad():
        model.shape_match.gain.fill_(1.0)  # a strong term: 30 * log(match + 0.01)
    with pytest.warns(UserWarning, match="carries no tokenizer"):  # a bare checkpoint: the data's tokenizer
        opened = open_checkpoint(save_checkpoint(model, tmp_path / "run" / "last.safetensors"), data, "val")
    model, dataset = opened.model, opened.dataset
    entries = [{"index": 0}, {"index": 2}, {"index": 3}]
    items = [dataset[e["index"]] for e in entries]
    with_term = forward(model, items)["prob"].float()
    without_shape_match(model, dataset, entries, batch_size=2)
    assert model.shape_match.gain.item() == 1.0  # the model itself is left as it was
    with torch.no_grad():
        model.shape_match.gain.zero_()
    bare = forward(model, items)["prob"].float()
    assert [e["max_prob_without_shape_match"] for e in entries] == pytest.approx(bare.amax((1, 2)).tolist())
    assert not torch.allclose(with_term, bare)  # the term changed the maps, so the two peaks are not one number
    fresh = [{"index": 0}]
    without_shape_match(build_model("lvg-tiny"), dataset, fresh, batch_size=2)
    assert fresh == [{"index": 0}]  # no shape match: nothing to leave out
