"""The synthetic dataset generator: files in the real formats, exact masks, true and unique expressions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lvg.errors import InputError
from lvg.train.data import load_grefer, load_refer
from lvg.train.synth import (
    COLOURS,
    MIN_VOCAB_SIZE,
    expression_kind,
    generate,
    head_description,
    make_scene,
    rle_encode,
)

mask_api = pytest.importorskip("pycocotools.mask")
# pycocotools 2.0.x under numpy 2 warns about its own __array__ on every decode.
pytestmark = pytest.mark.filterwarnings("ignore:.*copy keyword:DeprecationWarning")

# ---------------------------------------------------------------------------------------------
# An independent reading of the expressions: plain word lists and the obvious geometry.

SIZE_WORDS = {"small": "small", "little": "small", "large": "large", "big": "large"}
TEXTURE_WORDS = {"solid", "striped", "dotted"}
COLOUR_WORDS = {"red", "green", "blue", "yellow", "purple", "orange"}
SHAPE_WORDS = {"circle", "square", "triangle", "star", "diamond", "hexagon"}
COUNT_PREFIXES = {"both": 2, "the two": 2, "the three": 3, "the four": 4, "the five": 5, "all the": None, "all": None}
RELATIONS = [(" to the left of ", "left"), (" to the right of ", "right"), (" left of ", "left"),
             (" right of ", "right"), (" above ", "above"), (" below ", "below"), (" under ", "below")]
EXTREMES = {"leftmost": "left", "rightmost": "right", "topmost": "top", "bottommost": "bottom",
            "on the left": "left", "on the right": "right", "at the top": "top", "at the bottom": "bottom"}


def _select(phrase: str, objects) -> list[int]:
    """Objects matching a noun phrase like 'small striped red circle' or 'purple shapes'."""
    want: dict[str, str] = {}
    for word in phrase.split():
        if word in SIZE_WORDS:
            want["size"] = SIZE_WORDS[word]
        elif word in TEXTURE_WORDS:
            want["texture"] = word
        elif word in COLOUR_WORDS:
            want["colour"] = word
        elif word.rstrip("s") in SHAPE_WORDS:
            want["shape"] = word.rstrip("s")
        elif word.rstrip("s") == "shape":
            pass
        else:
            raise AssertionError(f"unexpected word {word!r} in {phrase!r}")
    return [i for i, o in enumerate(objects) if all(getattr(o, k) == v for k, v in want.items())]


def _coordinate(obj, direction: str) -> float:
    return {"left": obj.cx, "right": -obj.cx, "top": obj.cy, "bottom": -obj.cy}[direction]


def denote(text: str, objects) -> set[int]:
    """What ``text`` denotes among ``objects`` under plain semantics (no margins)."""
    for prefix, count in COUNT_PREFIXES.items():
        if text.startswith(prefix + " "):
            found = set(_select(text[len(prefix) + 1:], objects))
            if count is not None:
                assert len(found) == count, text
            return found
    assert text.startswith("the "), text
    body = text[4:]
    for word, rel in RELATIONS:
        if word in body:
            head, ref = body.split(word)
            assert ref.startswith("the ")
            refs = _select(ref[4:], objects)
            assert len(refs) == 1, f"reference of {text!r} is not unique"
            b = objects[refs[0]]
            side = {"left": lambda a, b=b: a.cx < b.cx, "right": lambda a, b=b: a.cx > b.cx,
                    "above": lambda a, b=b: a.cy < b.cy, "below": lambda a, b=b: a.cy > b.cy}[rel]
            return {i for i in _select(head, objects) if i != refs[0] and side(objects[i])}
    for word, direction in EXTREMES.items():
        if body.startswith(word + " ") or body.endswith(" " + word):
            phrase = body[len(word) + 1:] if body.startswith(word + " ") else body[: -len(word) - 1]
            idx = _select(phrase, objects)
            if not idx:  # a no-target expression: the extreme of nothing
                return set()
            assert len(idx) >= 2, f"{text!r}: a positional expression over {len(idx)} object(s)"
            return {min(idx, key=lambda i: _coordinate(objects[i], direction))}
    return set(_select(body, objects))


# ---------------------------------------------------------------------------------------------


def _image_annotations(root: Path, dataset: str) -> dict[int, list[dict]]:
    data = json.loads((root / dataset / "instances.json").read_text())
    out: dict[int, list[dict]] = {}
    for ann in sorted(data["annotations"], key=lambda a: a["id"]):
        out.setdefault(ann["image_id"], []).append(ann)
    return out


def test_rle_encode_matches_pycocotools():
    rng = np.random.default_rng(0)
    masks = [
        rng.random((7, 5)) < 0.5,
        np.zeros((4, 6), bool),
        np.ones((3, 3), bool),
        np.eye(9, dtype=bool),
        rng.random((64, 48)) < 0.02,
        rng.random((1, 1)) < 2,
    ]
    masks[0][0, 0] = True  # a run starting with a 1 (the encoding then begins with a 0-length run)
    for m in masks:
        expected = mask_api.encode(np.asfortranarray(m.astype(np.uint8)))
        got = rle_encode(m)
        assert got["size"] == list(expected["size"])
        assert got["counts"] == expected["counts"].decode("ascii")


def test_files_in_both_layouts_read_back(synth_dataset):
    root = synth_dataset.out_dir
    assert (root / "refcoco-synth" / "refs(unc).p").is_file()
    assert (root / "grefcoco-synth" / "grefs(unc).json").is_file()
    meta = json.loads((root / "synth.json").read_text())
    assert meta["seed"] == synth_dataset.seed and meta["images"] == synth_dataset.images == 10
    assert meta["splits"] == {"train": 7, "val": 3}  # the fixture's 0.7 / 0.3 of 10 images

    refer = load_refer(root, "refcoco-synth", split=None)
    grefer = load_grefer(root, "grefcoco-synth", split=None)
    assert len(refer) == synth_dataset.refs
    assert refer.num_sentences() == synth_dataset.ref_sentences
    assert len(grefer) == synth_dataset.grefs
    assert all(len(s.ann_ids) == 1 and not s.no_target for s in refer.samples)
    assert sum(s.no_target for s in grefer.samples) == synth_dataset.no_target_refs > 0
    assert sum(len(s.ann_ids) > 1 for s in grefer.samples) == synth_dataset.multi_target_refs > 0
    # Splits are by image: no image is in two splits.
    train = {s.image_id for s in load_refer(root, "refcoco-synth", split="train").samples}
    val = {s.image_id for s in load_refer(root, "refcoco-synth", split="val").samples}
    assert train and val and not train & val


def test_masks_are_the_rendered_visible_objects(synth_dataset):
    root = synth_dataset.out_dir
    anns_by_image = _image_annotations(root, "refcoco-synth")
    for image_index in range(synth_dataset.images):
        scene = make_scene(synth_dataset.seed, image_index, size_range=synth_dataset.size_range)
        anns = anns_by_image[image_index + 1]
        assert len(anns) == len(scene.objects) >= 2
        on_disk = np.asarray(Image.open(root / "images" / f"synth_{image_index + 1:06d}.jpg").convert("RGB"))
        assert on_disk.shape == scene.image.shape
        assert np.abs(on_disk.astype(int) - scene.image.astype(int)).mean() < 4  # JPEG q95
        union = np.zeros(scene.image.shape[:2], int)
        for obj, ann, rendered in zip(scene.objects, anns, scene.masks):
            decoded = mask_api.decode(ann["segmentation"]).astype(bool)
            assert np.array_equal(decoded, rendered)
            assert ann["area"] == decoded.sum() > 0
            union += decoded
            h, w = decoded.shape
            ys, xs = np.nonzero(decoded)
            # Geometry, independently: every mask pixel lies within the shape's circumradius.
            dist = np.hypot(xs + 0.5 - obj.cx, ys + 0.5 - obj.cy)
            assert dist.max() <= obj.radius + 1.5
            x, y, bw, bh = ann["bbox"]
            assert (x, y, x + bw, y + bh) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            if obj.shape == "circle":
                # Occlusion may hide at most 40% of it.
                assert decoded.sum() >= 0.6 * math.pi * obj.radius**2 * 0.9
            if obj.texture == "solid":
                inner = decoded.copy()
                for dy, dx in ((2, 0), (-2, 0), (0, 2), (0, -2)):
                    inner &= np.roll(decoded, (dy, dx), axis=(0, 1))
                if inner.sum() >= 20:
                    median = np.median(on_disk[inner].astype(float), axis=0)
                    assert np.abs(median - np.asarray(COLOURS[obj.colour])).max() <= 30, (obj, median)
        assert union.max() == 1  # visible masks are disjoint


def test_expressions_are_true_and_unique(synth_dataset):
    root = synth_dataset.out_dir
    grefer = load_grefer(root, "grefcoco-synth", split=None)
    anns_by_image = _image_annotations(root, "grefcoco-synth")
    kinds = set()
    for sample in grefer.samples:
        scene = make_scene(synth_dataset.seed, sample.image_id - 1, size_range=synth_dataset.size_range)
        ann_to_obj = {a["id"]: i for i, a in enumerate(anns_by_image[sample.image_id])}
        expected = {ann_to_obj[a] for a in sample.ann_ids}
        assert sample.no_target == (not expected)
        for sentence in sample.sentences:
            assert denote(sentence, scene.objects) == expected, sentence
            if any(w in sentence for w, _ in RELATIONS):
                kinds.add("relation")
            elif any(w in sentence for w in EXTREMES):
                kinds.add("position")
            elif len(expected) != 1:
                kinds.add("none" if not expected else "multi")
            else:
                kinds.add("attribute")
    assert kinds == {"relation", "position", "multi", "none", "attribute"}


def test_tokenizer_covers_every_expression(synth_dataset):
    from lvg.core.tokenizer import UNK_ID, Tokenizer

    tok = Tokenizer.from_file(synth_dataset.tokenizer)
    grefer = load_grefer(synth_dataset.out_dir, "grefcoco-synth", split=None)
    for _, sentence in grefer.sentences_flat():
        ids, mask = tok.encode(sentence, 40)
        assert UNK_ID not in ids[mask]
        assert tok.decode(ids) == sentence


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_and_seed_dependent(tmp_path):
    kwargs = dict(images=3, size_range=(96, 160), splits="train")
    generate(tmp_path / "a", seed=3, workers=1, **kwargs)
    generate(tmp_path / "b", seed=3, workers=2, **kwargs)  # the worker count changes nothing
    generate(tmp_path / "c", seed=4, workers=1, **kwargs)
    a, b, c = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys()
    assert a["images/synth_000001.jpg"] != c["images/synth_000001.jpg"]
    assert a["grefcoco-synth/grefs(unc).json"] != c["grefcoco-synth/grefs(unc).json"]
    refs = load_refer(tmp_path / "a", "refcoco-synth", split="train")
    assert {s.image_id for s in refs.samples} == {1, 2, 3}


def test_varied_no_target_forms_denote_nothing_and_change_nothing_else():
    """``no_target_forms="varied"``: the same images and target expressions as "plain"; every no-target
    expression denotes nothing (independent reading), is read back as "none", and "the <colour> <shape>" is
    one wording among many, positions over nothing included."""
    forms = {"colour shape": 0, "other phrase": 0, "position": 0}
    for i in range(80):
        plain, varied = make_scene(11, i, size_range=(96, 160)), make_scene(11, i, size_range=(96, 160),
                                                                           no_target_forms="varied")
        assert np.array_equal(plain.image, varied.image)
        assert varied.single == plain.single and varied.multi == plain.multi
        assert all(len(e.text.split()) == 3 for e in plain.none)  # "the <colour> <shape>"
        for e in varied.none:
            assert denote(e.text, varied.objects) == set(), e.text
            assert e.kind == "none" and expression_kind(e.text, 0) == "none"
            words = e.text.split()
            if any(w in e.text for w in EXTREMES):
                forms["position"] += 1
            elif len(words) == 3 and words[1] in COLOUR_WORDS and words[2] in SHAPE_WORDS:
                forms["colour shape"] += 1
            else:
                forms["other phrase"] += 1
    total = sum(forms.values())
    assert total > 80 and forms["position"] > 0.1 * total and forms["colour shape"] < 0.3 * total, forms


def test_scenes_vary_in_size_and_content():
    scenes = [make_scene(0, i) for i in range(12)]
    sizes = {(s.width, s.height) for s in scenes}
    assert len(sizes) == 12
    assert all(320 <= w <= 640 and 320 <= h <= 640 for w, h in sizes)
    assert any(w > 1.3 * h for w, h in sizes) or any(h > 1.3 * w for w, h in sizes)
    counts = {len(s.objects) for s in scenes}
    assert min(counts) >= 2 and max(counts) <= 6 and len(counts) >= 3


def test_expression_kind_reads_back_the_generators_kind():
    seen = set()
    for i in range(40):
        scene = make_scene(3, i, size_range=(96, 160))
        exprs = [e for es in scene.single.values() for e in es] + scene.multi + scene.none
        for e in exprs:
            assert expression_kind(e.text, len(e.targets)) == e.kind, e
            seen.add(e.kind)
    assert seen == {"attribute", "position", "relation", "multi", "none"}  # every branch was exercised


def test_head_description_names_the_targets_candidates():
    """An attribute expression's head picks out its target alone; a position or relation expression's head
    holds the target among the candidates it chooses from (SceneObject fields, as the generator checks)."""
    ambiguous = 0
    for i in range(40):
        scene = make_scene(5, i, size_range=(96, 160))
        for t, exprs in scene.single.items():
            for e in exprs:
                head = head_description(e.text)
                assert set(head) <= {"size", "texture", "colour", "shape"}
                candidates = [j for j, o in enumerate(scene.objects)
                              if all(getattr(o, a) == v for a, v in head.items())]
                assert t in candidates, (e, head)
                if e.kind == "attribute":
                    assert candidates == [t], (e, head)
                ambiguous += e.kind != "attribute" and len(candidates) > 1
    assert ambiguous > 20
    assert head_description("the big dotted red star under the blue circle") == {
        "size": "large", "texture": "dotted", "colour": "red", "shape": "star"}


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError):
        generate(tmp_path, images=0, seed=0)
    with pytest.raises(InputError):
        generate(tmp_path, images=1, seed=0, size_range=(300, 200))
    with pytest.raises(InputError):
        generate(tmp_path, images=1, seed=0, splits=(("train", -1.0), ("val", 0.5)))
    # Too small a vocabulary is refused before anything is drawn; the smallest accepted one trains.
    with pytest.raises(InputError, match="vocab_size"):
        generate(tmp_path / "v", images=1, seed=0, vocab_size=MIN_VOCAB_SIZE - 1)
    assert not (tmp_path / "v").exists()
    small = generate(tmp_path / "v", images=2, seed=0, size_range=(96, 128), vocab_size=MIN_VOCAB_SIZE)
    assert small.tokenizer.is_file()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot create"):
        generate(blocker / "data", images=1, seed=0)


def test_cli_data_synth_and_stats(tmp_path):
    from typer.testing import CliRunner

    from lvg.cli import app

    runner = CliRunner()
    out = tmp_path / "syn"
    result = runner.invoke(app, ["data", "synth", "--out", str(out), "--images", "3", "--seed", "2",
                                 "--min-size", "96", "--max-size", "128", "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["images"] == 3 and summary["seed"] == 2
    assert sum(summary["splits"].values()) == 3
    assert len(list((out / "images").glob("*.jpg"))) == 3
    assert len(load_refer(out, "refcoco-synth", split=None)) == summary["refs"]

    stats = runner.invoke(app, ["data", "stats", f"{out}:grefcoco-synth", "--json"])
    assert stats.exit_code == 0, stats.output
    info = json.loads(stats.stdout)
    assert info["samples"] == summary["grefs"] and info["images"] == 3
    assert info["no_target"] == summary["no_target_refs"]

    # The no-target wording is recorded in synth.json (a plain dataset's file is pinned by hash and says
    # nothing); an unknown one is refused before anything is written.
    assert "no_target_forms" not in json.loads((out / "synth.json").read_text())
    varied = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "v"), "--images", "2", "--min-size",
                                 "96", "--max-size", "128", "--workers", "1", "--no-target-forms", "varied"])
    assert varied.exit_code == 0, varied.output
    assert json.loads((tmp_path / "v" / "synth.json").read_text())["no_target_forms"] == "varied"
    odd = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "o"), "--images", "1",
                              "--no-target-forms", "clever"])
    assert odd.exit_code == 2 and "--no-target-forms must be plain or varied" in odd.output
    assert "Traceback" not in odd.output and not (tmp_path / "o").exists()

    # A non-empty output directory is refused with a one-line error, not a traceback.
    again = runner.invoke(app, ["data", "synth", "--out", str(out), "--images", "1"])
    assert again.exit_code == 2
    assert "error:" in again.output and "not empty" in again.output and "Traceback" not in again.output
    missing = runner.invoke(app, ["data", "stats", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "error: dataset not found" in missing.output
    # A file inside a dataset (here its synth.json) is told apart from a missing path, and the folder named.
    a_file = runner.invoke(app, ["data", "stats", str(out / "synth.json")])
    assert a_file.exit_code == 2 and "is a file" in a_file.output and f"e.g. {out}" in a_file.output
