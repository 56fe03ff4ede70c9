"""Per-patch labels (lvg.train.patch_labels) as the grounding batches carry them for the per-patch shape loss:
the same labels the pretraining stage reads, flipped with the item, on background nothing to predict."""

from __future__ import annotations

import numpy as np
import pytest

from lvg.config import get_config
from lvg.core.preprocess import letterbox_geometry, letterbox_mask
from lvg.core.tokenizer import Tokenizer
from lvg.errors import ConfigError
from lvg.train.data import open_dataset
from lvg.train.patch_labels import IGNORE, PatchLabels
from lvg.train.pretrain import PretrainDataset
from lvg.train.refer_files import decode_segmentation
from lvg.train.sampling import Planned
from lvg.train.synth import SHAPES
from lvg.train.torch_data import GroundingDataset


def test_grounding_items_carry_the_pretraining_stages_shape_labels(synth_dataset) -> None:
    cfg = get_config("lvg-tiny")
    source = open_dataset(synth_dataset.out_dir, split="train", prefer_gres=True)
    tok = Tokenizer.from_file(synth_dataset.tokenizer)
    ground = GroundingDataset.for_model(source, cfg, tokenizer=tok, train=True, seed=3, patch_shape=True)
    plain = GroundingDataset.for_model(source, cfg, tokenizer=tok, train=True, seed=3)
    pre = PretrainDataset(source, source.instances, model_cfg=cfg, tokenizer=tok, seed=3, mlm_probability=0.3)
    objects = 0
    for i in range(len(source.samples)):
        for flip in (False, True):
            key = Planned(i, 0, flip, False, i)
            shape, want = ground[key]["patch_shape"].numpy(), pre[key]
            on = want["patch_object"].numpy()
            assert shape.shape == (cfg.encoder.grid ** 2,) and shape.dtype == np.int64
            assert (shape[~on] == IGNORE).all()
            assert (shape[on] == want["patch_attributes"].numpy()[on, 0] - 1).all()
            assert ((shape[on] >= 0) & (shape[on] < len(SHAPES))).all()
            objects += int(on.sum())
        # The rest of the item is what the dataset gives without the labels.
        a, b = ground[Planned(i, 0, True, True, i)], plain[Planned(i, 0, True, True, i)]
        assert "patch_shape" not in b and all((a[k] == b[k]).all() for k in b if k not in ("index", "sample_index"))
    assert objects > 0


def test_patch_labels_need_the_instances_file() -> None:
    with pytest.raises(ConfigError, match=r"instances\.json"):
        PatchLabels(None, get_config("lvg-tiny"))


def test_cached_labels_are_the_computed_ones_and_callers_cannot_change_them(synth_dataset) -> None:
    cfg = get_config("lvg-tiny")
    source = open_dataset(synth_dataset.out_dir, split="train", prefer_gres=True)
    labels = PatchLabels(source.instances, cfg)
    labels.CACHED = 2  # evictions happen within the test
    calls = [(s.image_id, letterbox_geometry(s.width, s.height, cfg.preprocess.size), flip)
             for s in source.samples for flip in (False, True)] * 2
    for image_id, lb, flip in calls:
        got = labels(image_id, lb, flip)
        want = labels._compute(image_id, lb, flip)
        assert all((a == b).all() for a, b in zip(got, want))
        got[0][:] = 99  # a caller writing into its arrays
    assert len(labels._cache) == 2


def test_items_carry_which_object_each_map_pixel_lies_on_and_the_target_among_them(synth_dataset) -> None:
    from lvg.core.preprocess import letterbox_mask
    from lvg.train.refer_files import decode_segmentation

    cfg = get_config("lvg-tiny")
    source = open_dataset(synth_dataset.out_dir, split="train", prefer_gres=True)
    tok = Tokenizer.from_file(synth_dataset.tokenizer)
    ds = GroundingDataset.for_model(source, cfg, tokenizer=tok, train=True, seed=3, objects=True)
    labels = PatchLabels(source.instances, cfg)
    singles = 0
    for i, sample in enumerate(source.samples):
        for s in range(len(sample.sentences)):
            for flip in (False, True):
                item = ds[Planned(i, s, flip, False, i)]
                owners, target = item["objects"].numpy(), int(item["target_object"])
                assert owners.shape == item["target"].shape and owners.dtype == np.int64
                if sample.no_target or len(sample.ann_ids) != 1:
                    assert target == IGNORE
                    continue
                singles += 1
                # The target's pixels are where the item's own target mask covers more than half of a pixel.
                on = owners == target
                assert on.any() and (item["target"].numpy()[on] > 0.5).all()
                assert (owners[item["target"].numpy() > 0.5] == target).mean() > 0.9
        # Every object, decoded and letterboxed on its own, owns its pixels (unflipped item).
        lb = letterbox_geometry(sample.width, sample.height, cfg.preprocess.size)
        owners = labels.owners(sample.image_id, lb, False)
        for ann in labels.objects[sample.image_id]:
            m = decode_segmentation(ann["segmentation"], sample.height, sample.width)
            soft = letterbox_mask(m, lb, out_size=cfg.prob_size)
            k = labels.object_index(sample.image_id, ann["id"])
            assert (soft[owners == k] > 0.5).all()
        assert (owners == 0).mean() > 0.1  # background remains
    assert singles > 0


def test_object_labels_need_the_patch_labels_and_name_only_the_images_objects(synth_dataset) -> None:
    from lvg.errors import InputError

    cfg = get_config("lvg-tiny")
    source = open_dataset(synth_dataset.out_dir, split="train", prefer_gres=True)
    tok = Tokenizer.from_file(synth_dataset.tokenizer)
    with pytest.raises(InputError, match="patch_labels"):
        GroundingDataset(source, preprocess=cfg.preprocess, tokenizer=tok, train=True, objects=True)
    labels = PatchLabels(source.instances, cfg)
    with pytest.raises(InputError, match="not an object of image"):
        labels.object_index(source.samples[0].image_id, -5)


@pytest.mark.parametrize("min_cover", [0.3, 0.1])
def test_a_patch_is_labelled_by_the_object_covering_most_of_it_past_the_minimum(synth_dataset, min_cover) -> None:
    cfg = get_config("lvg-tiny")
    g, q = cfg.encoder.grid, cfg.prob_size
    source = open_dataset(synth_dataset.out_dir, split="train", prefer_gres=True)
    labels = PatchLabels(source.instances, cfg, min_cover=min_cover)
    labelled = 0
    for s in source.samples:
        lb = letterbox_geometry(s.width, s.height, cfg.preprocess.size)
        anns = labels.objects[s.image_id]
        # (objects, g, g): each object's share of each patch, from its mask at the map's scale
        cover = np.stack([letterbox_mask(decode_segmentation(a["segmentation"], s.height, s.width), lb, out_size=q)
                          .reshape(g, q // g, g, q // g).mean(axis=(1, 3)) for a in anns])
        best = cover.argmax(axis=0).reshape(-1)  # (g*g,)
        shapes = np.array([SHAPES.index(labels.categories[int(a["category_id"])]) for a in anns])
        want = np.where(cover.max(axis=0).reshape(-1) > min_cover, shapes[best], IGNORE)
        assert (labels.shape(s.image_id, lb, False) == want).all()
        labelled += int((want != IGNORE).sum())
    assert labelled > 0


def test_a_lower_minimum_cover_labels_more_patches_and_keeps_the_others(synth_dataset) -> None:
    cfg = get_config("lvg-tiny")
    source = open_dataset(synth_dataset.out_dir, split="train", prefer_gres=True)
    strict, loose = PatchLabels(source.instances, cfg), PatchLabels(source.instances, cfg, min_cover=0.05)
    more = 0
    for s in source.samples:
        lb = letterbox_geometry(s.width, s.height, cfg.preprocess.size)
        a, b = strict.shape(s.image_id, lb, True), loose.shape(s.image_id, lb, True)
        assert (b[a != IGNORE] == a[a != IGNORE]).all()
        more += int(((a == IGNORE) & (b != IGNORE)).sum())
    assert more > 0


@pytest.mark.parametrize("min_cover", [0.0, -0.1, 1.0, 1.5])
def test_a_minimum_cover_outside_zero_to_one_is_refused(synth_dataset, min_cover) -> None:
    source = open_dataset(synth_dataset.out_dir, split="train", prefer_gres=True)
    with pytest.raises(ConfigError, match="minimum cover"):
        PatchLabels(source.instances, get_config("lvg-tiny"), min_cover=min_cover)
