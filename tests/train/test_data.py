"""REFER / gREFER readers on hand-written datasets, and the torch GroundingDataset."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lvg.errors import InputError, MissingDependencyError
from lvg.train.data import flip_allowed, load_grefer, load_refer, mentions_colour, open_dataset
from lvg.train.refer_files import decode_segmentation, read_refs_pickle

mask_api = pytest.importorskip("pycocotools.mask")
# pycocotools 2.0.x under numpy 2 warns about its own __array__ on every encode / decode.
pytestmark = pytest.mark.filterwarnings("ignore:.*copy keyword:DeprecationWarning")

W1, H1 = 40, 30  # image 1 (width, height)
W2, H2 = 24, 20  # image 2


def _runs_column_major(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts, written out plainly: column-major runs, starting with zeros."""
    counts, current, run = [], 0, 0
    for value in mask.T.reshape(-1):  # (H, W) -> (W, H) -> column-major pixel order
        if int(value) == current:
            run += 1
        else:
            counts.append(run)
            current, run = int(value), 1
    counts.append(run)
    return counts


def expected_masks() -> dict[int, np.ndarray]:
    """The annotations' masks, built directly with numpy slicing / geometry."""
    m11 = np.zeros((H1, W1), bool)
    m11[3:10, 2:12] = True  # polygon [2,3 .. 12,10]
    m11[20:28, 20:25] = True  # second polygon of the same annotation
    yy, xx = np.mgrid[0:H1, 0:W1]
    m12 = (xx - 30) ** 2 + (yy - 10) ** 2 <= 25  # a disc, stored as compressed RLE
    m13 = np.zeros((H2, W2), bool)
    m13[5:10, 4:8] = True  # stored as uncompressed RLE
    m14 = np.zeros((H1, W1), bool)
    m14[0:2, 0:40] = True  # a crowd annotation (uncompressed RLE)
    m15 = np.zeros((H2, W2), bool)
    m15[2:5, 2:8] = True  # an L-shaped polygon
    m15[5:9, 2:5] = True
    return {11: m11, 12: m12, 13: m13, 14: m14, 15: m15}


def _bbox(m: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(m)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]


def _instances() -> dict:
    masks = expected_masks()
    rle12 = mask_api.encode(np.asfortranarray(masks[12].astype(np.uint8)))
    segs = {
        11: [[2, 3, 12, 3, 12, 10, 2, 10], [20, 20, 25, 20, 25, 28, 20, 28]],
        12: {"size": [H1, W1], "counts": rle12["counts"].decode("ascii")},
        13: {"size": [H2, W2], "counts": _runs_column_major(masks[13])},
        14: {"size": [H1, W1], "counts": _runs_column_major(masks[14])},
        15: [[2, 2, 8, 2, 8, 5, 5, 5, 5, 9, 2, 9]],
    }
    image_of = {11: 1, 12: 1, 13: 2, 14: 1, 15: 2}
    return {
        "images": [{"id": 1, "file_name": "img1.png", "height": H1, "width": W1},
                   {"id": 2, "file_name": "img2.png", "height": H2, "width": W2}],
        "annotations": [
            {"id": a, "image_id": image_of[a], "segmentation": segs[a], "bbox": _bbox(masks[a]),
             "area": float(masks[a].sum()), "iscrowd": int(a == 14), "category_id": 1}
            for a in segs
        ],
        "categories": [{"id": 1, "name": "thing", "supercategory": "thing"}],
    }


def _sent(text: str, sid: int) -> dict:
    return {"sent": text, "raw": text, "tokens": text.split(), "sent_id": sid}


@pytest.fixture()
def refer_root(tmp_path: Path) -> Path:
    """A tiny dataset root: refcoco (REFER pickle) and grefcoco (gREFER json) sharing two images."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    Image.fromarray(rng.integers(0, 255, (H1, W1, 3), dtype=np.uint8)).save(tmp_path / "images" / "img1.png")
    Image.fromarray(rng.integers(0, 255, (H2, W2, 3), dtype=np.uint8)).save(tmp_path / "images" / "img2.png")
    instances = json.dumps(_instances())
    refs = [
        {"ref_id": 1, "ann_id": 11, "image_id": 1, "split": "train", "category_id": 1, "sent_ids": [1, 2],
         "sentences": [_sent("left box", 1), _sent("the box on the left", 2)], "file_name": "img1_11.png"},
        {"ref_id": 2, "ann_id": 12, "image_id": 1, "split": "val", "category_id": 1, "sent_ids": [3],
         "sentences": [_sent("round thing", 3)], "file_name": "img1_12.png"},
        {"ref_id": 3, "ann_id": 13, "image_id": 2, "split": "train", "category_id": 1, "sent_ids": [4],
         "sentences": [_sent("small square", 4)], "file_name": "img2_13.png"},
        {"ref_id": 4, "ann_id": 15, "image_id": 2, "split": "testA", "category_id": 1, "sent_ids": [],
         "sentences": [], "file_name": "img2_15.png"},
    ]
    (tmp_path / "refcoco").mkdir()
    (tmp_path / "refcoco" / "instances.json").write_text(instances)
    (tmp_path / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    grefs = [
        {"ref_id": 10, "ann_id": [11, 12], "image_id": 1, "split": "train", "category_id": [1, 1],
         "sentences": [_sent("both things", 10)], "sent_ids": [10], "no_target": False, "file_name": "img1.png"},
        {"ref_id": 11, "ann_id": [-1], "image_id": 2, "split": "train", "category_id": [-1],
         "sentences": [_sent("the dog", 11), _sent("a cat", 12)], "sent_ids": [11, 12], "no_target": True,
         "file_name": "img2.png"},
        {"ref_id": 12, "ann_id": [13], "image_id": 2, "split": "val", "category_id": [1],
         "sentences": [_sent("small square", 13)], "sent_ids": [13], "no_target": False, "file_name": "img2.png"},
        {"ref_id": 13, "ann_id": [12, 14], "image_id": 1, "split": "train", "category_id": [1, 1],
         "sentences": [_sent("the disc and the crowd", 14)], "sent_ids": [14], "no_target": False,
         "file_name": "img1.png"},
    ]
    (tmp_path / "grefcoco").mkdir()
    (tmp_path / "grefcoco" / "instances.json").write_text(instances)
    (tmp_path / "grefcoco" / "grefs(unc).json").write_text(json.dumps(grefs))
    return tmp_path


def test_segmentation_decoding_of_every_format():
    inst = _instances()
    masks = expected_masks()
    for ann in inst["annotations"]:
        h, w = (H1, W1) if ann["image_id"] == 1 else (H2, W2)
        got = decode_segmentation(ann["segmentation"], h, w)
        assert got.dtype == bool and got.shape == (h, w)
        assert np.array_equal(got, masks[ann["id"]]), ann["id"]
    # Compressed counts given as bytes decode the same as str.
    rle = mask_api.encode(np.asfortranarray(masks[12].astype(np.uint8)))
    assert np.array_equal(decode_segmentation(dict(rle), H1, W1), masks[12])
    # Degenerate polygons (fewer than 3 points) contribute nothing instead of being read as boxes.
    assert not decode_segmentation([[1, 1, 5, 5]], H1, W1).any()
    with pytest.raises(InputError, match="RLE of size"):
        decode_segmentation({"size": [5, 5], "counts": "00"}, H1, W1)
    with pytest.raises(InputError, match="unrecognised"):
        decode_segmentation("polygon", H1, W1)


def test_missing_pycocotools_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools.mask", None)  # makes the import fail
    with pytest.raises(MissingDependencyError, match=r"latent-vg\[train\]"):
        decode_segmentation([[2, 3, 12, 3, 12, 10, 2, 10]], H1, W1)


def test_load_refer(refer_root):
    masks = expected_masks()
    src = load_refer(refer_root, "refcoco", "unc", "train")
    assert [s.ref_id for s in src.samples] == [1, 3]
    first, second = src.samples
    assert first.sentences == ("left box", "the box on the left")
    assert first.ann_ids == (11,) and not first.no_target
    assert (first.width, first.height) == (W1, H1)
    assert first.image_path == refer_root / "images" / "img1.png"
    assert np.array_equal(src.mask(first), masks[11])
    assert np.array_equal(src.mask(1), masks[13])
    assert src.box(first) == (2.0, 3.0, 25.0, 28.0)
    assert src.box(second) == (4.0, 5.0, 8.0, 10.0)
    assert src.sentences_flat() == [(0, "left box"), (0, "the box on the left"), (1, "small square")]
    assert src.load_image(first).size == (W1, H1)

    everything = load_refer(refer_root, "refcoco", split=None)
    assert [s.ref_id for s in everything.samples] == [1, 2, 3]
    assert everything.skipped == 1  # ref 4 has no sentences
    assert np.array_equal(everything.mask(1), masks[12])
    with pytest.raises(InputError, match="no split 'testB'"):
        load_refer(refer_root, "refcoco", split="testB")
    with pytest.raises(InputError, match="not found"):
        load_refer(refer_root, "refcoco", split_by="umd")


def test_load_grefer_multi_and_no_target(refer_root):
    masks = expected_masks()
    src = load_grefer(refer_root, "grefcoco", "unc", "train")
    multi, empty, crowd = src.samples
    assert multi.ann_ids == (11, 12)
    assert np.array_equal(src.mask(multi), masks[11] | masks[12])
    b11, b12 = _bbox(masks[11]), _bbox(masks[12])
    assert src.box(multi) == (min(b11[0], b12[0]), min(b11[1], b12[1]),
                              max(b11[0] + b11[2], b12[0] + b12[2]), max(b11[1] + b11[3], b12[1] + b12[3]))
    assert empty.no_target and empty.ann_ids == ()
    assert src.mask(empty).shape == (H2, W2) and not src.mask(empty).any()
    assert src.box(empty) is None
    assert empty.sentences == ("the dog", "a cat")
    # Crowd annotations are left out of the merged target (ReLA's G_REFER convention).
    assert np.array_equal(src.mask(crowd), masks[12])
    assert src.box(crowd) == tuple(float(v) for v in (b12[0], b12[1], b12[0] + b12[2], b12[1] + b12[3]))
    assert src.sentences_flat() == [(0, "both things"), (1, "the dog"), (1, "a cat"), (2, "the disc and the crowd")]
    assert [s.ref_id for s in load_grefer(refer_root, "grefcoco", split="val").samples] == [12]


def test_open_dataset_specs(refer_root, synth_dataset):
    assert open_dataset(f"{refer_root}:refcoco:unc", split="train").kind == "refer"
    assert open_dataset(f"{refer_root}:refcoco", split="val").samples[0].ref_id == 2
    assert open_dataset(f"{refer_root}:grefcoco:unc", split="train").kind == "grefer"
    assert open_dataset(refer_root / "grefcoco", split=None).name == "grefcoco(unc)"
    syn = synth_dataset.out_dir
    assert open_dataset(syn, split="train").name == "refcoco-synth(unc)"
    assert open_dataset(syn, split="train", prefer_gres=True).name == "grefcoco-synth(unc)"
    assert open_dataset(f"{syn}:grefcoco-synth", split="val").kind == "grefer"
    with pytest.raises(InputError, match="dataset not found"):
        open_dataset(f"{refer_root}/nothing:refcoco")
    with pytest.raises(InputError, match=r"no refs\(google\)"):
        open_dataset(f"{refer_root}:refcoco:google")
    with pytest.raises(InputError, match="dataset directory not found"):
        open_dataset(f"{refer_root}:refcocog:umd")
    # An explicit image directory must exist.
    with pytest.raises(InputError, match="image directory"):
        open_dataset(f"{refer_root}:refcoco", image_dir=refer_root / "missing")


def test_reader_errors(refer_root):
    inst = _instances()
    inst["annotations"] = [a for a in inst["annotations"] if a["id"] != 13]
    (refer_root / "refcoco" / "instances.json").write_text(json.dumps(inst))
    with pytest.raises(InputError, match="annotation 13"):
        load_refer(refer_root, "refcoco", split="train")
    (refer_root / "grefcoco" / "instances.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_grefer(refer_root, "grefcoco", split="train")


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Plain:
    pass


def test_refs_pickle_is_read_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.p"
    evil.write_bytes(pickle.dumps([{"ref_id": 1, "x": _Evil(str(marker))}], protocol=2))
    with pytest.raises(InputError, match="refusing to unpickle"):
        read_refs_pickle(evil)
    assert not marker.exists()
    plain = tmp_path / "plain.p"
    plain.write_bytes(pickle.dumps([{"ref_id": 1, "x": _Plain()}], protocol=4))
    with pytest.raises(InputError, match="refusing to unpickle"):
        read_refs_pickle(plain)
    truncated = tmp_path / "truncated.p"
    truncated.write_bytes(pickle.dumps([{"ref_id": 1}], protocol=2)[:-3])
    with pytest.raises(InputError, match="corrupt"):
        read_refs_pickle(truncated)
    not_list = tmp_path / "dict.p"
    not_list.write_bytes(pickle.dumps({"ref_id": 1}, protocol=2))
    with pytest.raises(InputError, match="list of ref dicts"):
        read_refs_pickle(not_list)
    # Builtin containers are fine, sets included (they pickle through builtins.set).
    ok = tmp_path / "ok.p"
    ok.write_bytes(pickle.dumps([{"ref_id": 1, "tags": {1, 2}, "pair": (1.5, "a")}], protocol=2))
    assert read_refs_pickle(ok) == [{"ref_id": 1, "tags": {1, 2}, "pair": (1.5, "a")}]


def test_python2_refs_pickle(tmp_path):
    # What Python 2's pickle.dumps([{'sent': 'caf\xc3\xa9'}], 2) writes: str objects are SHORT_BINSTRING
    # bytes (here UTF-8 "café"), which must come back as text.
    def short_binstring(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b

    data = (b"\x80\x02]q\x00}q\x01(" + short_binstring(b"sent") + short_binstring("café".encode())
            + short_binstring(b"ref_id") + b"K\x07" + b"ua.")
    path = tmp_path / "py2.p"
    path.write_bytes(data)
    assert read_refs_pickle(path) == [{"sent": "café", "ref_id": 7}]


def test_augmentation_guards():
    for text in ("man on left", "the rightmost zebra", "LEFT guy", "second from right", "lft girl"):
        assert not flip_allowed(text), text
    for text in ("the tall man", "bright shirt guy", "upright piano", "the red circle"):
        assert flip_allowed(text), text
    assert mentions_colour("the Red circle") and mentions_colour("guy in dark shirt")
    assert not mentions_colour("the leftmost triangle") and not mentions_colour("credit card")


def test_data_module_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import lvg.train.data, lvg.train.refer_files, lvg.train.synth, lvg.cli.data\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------------------------------------
# The torch Dataset

torch = pytest.importorskip("torch")

from lvg.config import PreprocessConfig, get_config  # noqa: E402
from lvg.core.image import load_image  # noqa: E402
from lvg.core.preprocess import letterbox_mask, preprocess_image  # noqa: E402
from lvg.core.tokenizer import Tokenizer  # noqa: E402
from lvg.train.torch_data import GroundingDataset  # noqa: E402

S = 64
PRE = PreprocessConfig(size=S, max_text_len=16)


def _dataset(synth_dataset, *, split="val", train=False, gres=False, seed=0):
    source = open_dataset(synth_dataset.out_dir, split=split, prefer_gres=gres)
    tok = Tokenizer.from_file(synth_dataset.tokenizer)
    return GroundingDataset(source, preprocess=PRE, tokenizer=tok, train=train, seed=seed)


def test_eval_items_cover_every_sentence_and_align(synth_dataset):
    ds = _dataset(synth_dataset)
    flat = ds.source.sentences_flat()
    assert len(ds) == len(flat) > 0
    tok = Tokenizer.from_file(synth_dataset.tokenizer)
    for index in range(0, len(ds), 3):
        item = ds[index]
        sample_index, sentence = flat[index]
        assert item["index"] == index and item["sample_index"] == sample_index
        assert item["image"].shape == (3, S, S) and item["image"].dtype == torch.float32
        assert item["text_ids"].shape == (16,) and item["text_ids"].dtype == torch.int64
        assert item["text_mask"].shape == (16,) and item["text_mask"].dtype == torch.bool
        assert item["target"].shape == (S // 4, S // 4) and item["target"].dtype == torch.float32
        assert item["no_target"].dtype == torch.float32 and item["no_target"].item() == 0.0
        ids, _ = tok.encode(sentence, 16)
        assert np.array_equal(item["text_ids"].numpy(), ids)
        sample = ds.source.samples[sample_index]
        pixels, _ = preprocess_image(load_image(sample.image_path), PRE)
        assert np.array_equal(item["image"].numpy(), pixels)  # no augmentation in evaluation
        # Independently: the target holds the mask's area and centroid, mapped through the letterbox.
        mask = ds.source.mask(sample)
        w, h = sample.width, sample.height
        new_w, new_h = round(w * S / max(w, h)), round(h * S / max(w, h))
        sx, sy = new_w / w, new_h / h
        pad_x, pad_y = (S - new_w) // 2, (S - new_h) // 2
        target = item["target"].numpy()
        assert target.min() >= 0 and target.max() <= 1
        # Pillow's BOX resize assigns each source pixel to one output pixel (no fractional overlap), so
        # the area is kept to within a pixel or so along the outline.
        assert target.sum() * 16 == pytest.approx(mask.sum() * sx * sy, rel=0.05, abs=1.5)
        ys, xs = np.nonzero(mask)
        ty, tx = np.mgrid[0 : S // 4, 0 : S // 4]
        cx = (target * (tx + 0.5)).sum() / target.sum() * 4
        cy = (target * (ty + 0.5)).sum() / target.sum() * 4
        assert cx == pytest.approx(pad_x + (xs.mean() + 0.5) * sx, abs=1.0)
        assert cy == pytest.approx(pad_y + (ys.mean() + 0.5) * sy, abs=1.0)


def test_targets_follow_the_map_stride(synth_dataset):
    # A 1/2-scale target is the same area average at twice the resolution: its 2x2 blocks average to the
    # 1/4-scale target.
    source = open_dataset(synth_dataset.out_dir, split="val")
    tok = Tokenizer.from_file(synth_dataset.tokenizer)
    quarter = GroundingDataset(source, preprocess=PRE, tokenizer=tok, train=False)
    # A model whose map is at 1/2 scale gets 1/2-scale targets from its config alone.
    cfg = get_config("lvg-tiny-xy-stem-fine")
    cfg = cfg.replace(preprocess=PRE, encoder=dataclasses.replace(cfg.encoder, img_size=S))
    half = GroundingDataset.for_model(source, cfg, tokenizer=tok, train=False)
    for index in range(0, len(half), 5):
        fine, coarse = half[index]["target"], quarter[index]["target"]
        assert fine.shape == (S // 2, S // 2) and coarse.shape == (S // 4, S // 4)
        pooled = fine.reshape(S // 4, 2, S // 4, 2).mean(dim=(1, 3))  # (S/2, S/2) -> (S/4, 2, S/4, 2) -> (S/4, S/4)
        torch.testing.assert_close(pooled, coarse, rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="map_stride must be 4 or 2"):
        GroundingDataset(source, preprocess=PRE, tokenizer=tok, train=False, map_stride=3)
    with pytest.raises(InputError, match="multiple of the map stride 4"):
        GroundingDataset(source, preprocess=PreprocessConfig(size=S + 2, max_text_len=16), tokenizer=tok,
                         train=False)


def test_training_draws_and_flips(synth_dataset):
    ds = _dataset(synth_dataset, split="train", train=True, seed=5)
    assert len(ds) == len(ds.source.samples)
    flips = directional = 0
    chosen = {}
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            sample_index, sentence, flip, jitter = ds.plan(i)
            assert sample_index == i and sentence in ds.source.samples[i].sentences
            chosen[(epoch, i)] = sentence
            lowered = sentence.lower()
            if "left" in lowered or "right" in lowered:
                directional += 1
                assert not flip, sentence
            if any(c in lowered for c in ("red", "green", "blue", "yellow", "purple", "orange")):
                assert not jitter, sentence
            flips += flip
    assert directional > 0 and flips > 0
    # Deterministic per (seed, epoch, index); a new epoch draws other sentences somewhere.
    again = _dataset(synth_dataset, split="train", train=True, seed=5)
    again.set_epoch(3)
    assert all(again.plan(i)[1] == chosen[(3, i)] for i in range(len(ds)))
    assert any(chosen[(0, i)] != chosen[(1, i)] for i in range(len(ds)))


def test_flip_moves_image_and_target_together(synth_dataset):
    ds = _dataset(synth_dataset, split="train", train=True, seed=1)
    found = {True: None, False: None}
    for epoch in range(20):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            _, _, flip, jitter = ds.plan(i)
            if not jitter and found[flip] is None:
                found[flip] = (epoch, i)
    assert found[True] is not None and found[False] is not None
    for flip, (epoch, i) in found.items():
        ds.set_epoch(epoch)
        item = ds[i]
        sample = ds.source.samples[i]
        image, mask = load_image(sample.image_path), ds.source.mask(sample)
        if flip:
            image, mask = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), np.fliplr(mask)
        pixels, lb = preprocess_image(image, PRE)
        assert np.array_equal(item["image"].numpy(), pixels)
        assert np.array_equal(item["target"].numpy(), letterbox_mask(mask, lb, out_size=S // 4))


def test_no_target_items_and_collation(synth_dataset):
    ds = _dataset(synth_dataset, split="val", gres=True)
    flat = ds.source.sentences_flat()
    empties = [k for k, (si, _) in enumerate(flat) if ds.source.samples[si].no_target]
    assert empties
    item = ds[empties[0]]
    assert item["no_target"].item() == 1.0 and item["target"].sum().item() == 0.0
    loader = torch.utils.data.DataLoader(ds, batch_size=3, shuffle=False, num_workers=0)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 3, S, S)
    assert batch["target"].shape == (3, S // 4, S // 4)
    assert batch["index"].tolist() == [0, 1, 2]


def _pickle_of_ref_with(value_opcodes: bytes) -> bytes:
    """A protocol-2 pickle of ``[{"x": <value>}]``, the value given as raw opcodes."""
    return b"\x80\x02]}X\x01\x00\x00\x00x" + value_opcodes + b"sa."


def test_refs_pickle_admits_only_what_refer_files_hold(tmp_path):
    import struct

    # 38 bytes that would allocate hundreds of MB: bytearray(n) and bytes(n) are not in REFER files.
    for name in (b"bytearray", b"bytes"):
        path = tmp_path / "alloc.p"
        path.write_bytes(_pickle_of_ref_with(b"c__builtin__\n" + name + b"\nJ" + struct.pack("<i", 300_000_000)
                                             + b"\x85R"))
        assert path.stat().st_size < 50
        with pytest.raises(InputError, match="refusing to unpickle"):
            read_refs_pickle(path)
    # Nesting deeper than any ref (built by opcodes, without recursion) is refused, not a RecursionError.
    depth = 100_000
    deep = tmp_path / "deep.p"
    deep.write_bytes(_pickle_of_ref_with(b"]" * depth + b"a" * (depth - 1)))
    with pytest.raises(InputError, match="nested"):
        read_refs_pickle(deep)
    # A file over the size cap is refused before it is read (a sparse file: no disk space is used).
    from lvg.train import refer_files

    huge = tmp_path / "huge.p"
    with open(huge, "wb") as fh:
        fh.truncate(refer_files.MAX_REFS_BYTES + 1)
    with pytest.raises(InputError, match="too large"):
        read_refs_pickle(huge)
