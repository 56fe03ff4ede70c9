"""Several REFER datasets as one (the paper's combined setting): evaluation images of any leave training."""

from __future__ import annotations

import pickle
import shutil

from lvg.train.combined import REF_ID_STRIDE
from lvg.train.data import open_dataset
from lvg.train.refer_files import read_refs_pickle


def test_combined_train_split_leaves_out_every_evaluation_image(synth_dataset, tmp_path):
    src = synth_dataset.out_dir
    (tmp_path / "images").symlink_to(src / "images")
    for name in ("a", "b"):
        shutil.copytree(src / "refcoco-synth", tmp_path / name)
    refs = read_refs_pickle(tmp_path / "b" / "refs(unc).p")
    moved = next(r["image_id"] for r in refs if r["split"] == "train")
    for r in refs:  # dataset b evaluates on an image that dataset a trains on
        if r["image_id"] == moved:
            r["split"] = "val"
    (tmp_path / "b" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))

    a_train = open_dataset(f"{tmp_path}:a:unc", split="train")
    combined = open_dataset(f"{tmp_path}:a:unc,{tmp_path}:b:unc", split="train")
    kept_a = [s for s in a_train.samples if s.image_id != moved]
    assert len(combined) == 2 * len(kept_a) and len(kept_a) < len(a_train)
    assert moved not in {s.image_id for s in combined.samples}
    assert len({s.ref_id for s in combined.samples}) == len(combined)  # ids made distinct per dataset
    assert max(s.ref_id for s in combined.samples) > REF_ID_STRIDE
    assert combined.mask(len(combined) - 1).any()  # annotations of every dataset resolve
    val = open_dataset(f"{tmp_path}:a:unc,{tmp_path}:b:unc", split="val")
    assert len(val) == len(open_dataset(f"{tmp_path}:a:unc", split="val")) + len(
        open_dataset(f"{tmp_path}:b:unc", split="val"))
