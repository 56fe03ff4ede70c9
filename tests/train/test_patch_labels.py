"""Per-patch labels (lvg.train.patch_labels) as the grounding batches carry them for the per-patch shape loss:
the same labels the pretraining stage reads, flipped with the item, on background nothing to predict."""

from __future__ import annotations

import numpy as np
import pytest

from lvg.config import get_config
from lvg.core.preprocess import letterbox_geometry
from lvg.core.tokenizer import Tokenizer
from lvg.errors import ConfigError
from lvg.train.data import open_dataset
from lvg.train.patch_labels import IGNORE, PatchLabels
from lvg.train.pretrain import PretrainDataset
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
