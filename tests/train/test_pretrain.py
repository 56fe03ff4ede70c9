"""The pretraining stage (lvg.train.pretrain): dense labels against the generator, masked tokens, and runs
that pretrain, resume exactly and hand their encoder to a grounding run of another variant."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lvg.config import get_config
from lvg.core.preprocess import letterbox_geometry, letterbox_mask
from lvg.core.tokenizer import UNK_ID, Tokenizer
from lvg.errors import ConfigError
from lvg.modeling import build_model
from lvg.modeling.checkpoint import read_checkpoint_tensors, resample_patch_kernel
from lvg.train.config import TrainConfig
from lvg.train.data import open_dataset
from lvg.train.patch_labels import ATTRIBUTES, IGNORE, _object_attributes
from lvg.train.pretrain import PretrainDataset
from lvg.train.sampling import Planned
from lvg.train.state import seed_everything
from lvg.train.synth import make_scene
from lvg.train.trainer import AmpWarning, train


@pytest.fixture(scope="module")
def dataset(synth_dataset) -> PretrainDataset:
    source = open_dataset(synth_dataset.out_dir, split="train", prefer_gres=True)
    tok = Tokenizer.from_file(synth_dataset.tokenizer)
    return PretrainDataset(source, source.instances, model_cfg=get_config("lvg-tiny"), tokenizer=tok, seed=3,
                           mlm_probability=0.3)


def _item(ds: PretrainDataset, sample: int, flip: bool = False, key: int = 0) -> dict:
    return ds[Planned(sample, 0, flip, False, key)]


def test_patch_labels_are_the_generators_objects(dataset: PretrainDataset, synth_dataset) -> None:
    cfg = dataset.cfg
    g, q = cfg.encoder.grid, cfg.prob_size
    seen_images = set()
    for i, sample in enumerate(dataset.source.samples):
        if sample.image_id in seen_images:
            continue
        seen_images.add(sample.image_id)
        scene = make_scene(synth_dataset.seed, sample.image_id - 1, size_range=synth_dataset.size_range)
        lb = letterbox_geometry(scene.width, scene.height, cfg.preprocess.size)
        # Each object's share of every patch, from the generator's own visible masks.
        cover = np.stack([letterbox_mask(m, lb, out_size=q).reshape(g, q // g, g, q // g).mean(axis=(1, 3))
                          for m in scene.masks]).reshape(len(scene.masks), -1)  # (objects, g*g)
        item = _item(dataset, i)
        labels, is_obj = item["patch_attributes"].numpy(), item["patch_object"].numpy()
        expected = [[1 + vocab.index(getattr(o, name)) for name, vocab in ATTRIBUTES] for o in scene.objects]
        for p in range(g * g):
            best = int(cover[:, p].argmax())
            if cover[best, p] > 0.3 + 1e-6:
                assert is_obj[p] and labels[p].tolist() == expected[best], (sample.image_id, p)
            elif cover[:, p].max() < 0.3 - 1e-6:
                assert not is_obj[p] and labels[p].tolist() == [0, 0, 0, 0]
        # A horizontal flip mirrors the label grid and the centres.
        flipped = _item(dataset, i, flip=True)
        mirror = flipped["patch_attributes"].numpy().reshape(g, g, -1)[:, ::-1].reshape(g * g, -1)
        assert (mirror == labels).all()
        c, fc = item["patch_centre"].numpy(), flipped["patch_centre"].numpy().reshape(g, g, 2)[:, ::-1].reshape(-1, 2)
        # Up to one cell of the 1/4-scale map: the letterbox of an odd-sized image is not exactly symmetric.
        assert np.allclose(c[is_obj, 0], 1 - fc[is_obj, 0], atol=1 / q)
        assert np.allclose(c[is_obj, 1], fc[is_obj, 1], atol=1 / q)
    assert len(seen_images) >= 5


def test_masked_tokens(dataset: PretrainDataset) -> None:
    for i in range(len(dataset.source.samples)):
        item = _item(dataset, i, key=i)
        ids, mask, target = item["text_ids"], item["text_mask"], item["mlm_target"]
        original, _ = dataset.tokenizer.encode(dataset.source.samples[i].sentences[0], 16)
        chosen = target != IGNORE
        n = int(mask.sum())
        assert chosen.any() and not chosen[0] and not chosen[n - 1] and not chosen[n:].any()  # words only
        assert (ids[chosen] == UNK_ID).all() and (target[chosen] == torch.from_numpy(original)[chosen]).all()
        assert (ids[~chosen] == torch.from_numpy(original)[~chosen]).all()
        again = _item(dataset, i, key=i)
        assert torch.equal(again["text_ids"], ids)  # a pure function of the item's key


def _cfg(data: Path, **kw) -> TrainConfig:
    base = dict(variant="lvg-tiny", data=str(data), stage="pretrain", steps=3, batch_size=2, val_split=None,
                lr=1e-3, warmup_steps=1, log_every=1, save_every=0, seed=5)
    base.update(kw)
    return TrainConfig(**base)


def test_pretraining_resumes_exactly_and_starts_a_twin(tmp_path: Path, synth_dataset) -> None:
    data = synth_dataset.out_dir
    full = train(_cfg(data), tmp_path / "full", show_progress=False)
    assert full.step == 3 and {"loss_attributes", "loss_centre", "loss_mlm"} <= set(full.history[-1])
    train(_cfg(data), tmp_path / "split", show_progress=False, stop_at_step=1)
    train(_cfg(data), tmp_path / "split", show_progress=False, resume=True)
    a, b = (read_checkpoint_tensors(tmp_path / run / "last.safetensors") for run in ("full", "split"))
    assert any(k.startswith("train/pretrain_heads/") for k in a)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    seed_everything(5)  # as the run built its model
    fresh = build_model("lvg-tiny").state_dict()
    assert not torch.equal(a["beit3.text_embed.weight"], fresh["beit3.text_embed.weight"])
    # Only the encoder trains: the grounding parts are as the seed built them.
    assert torch.equal(a["text_head.fc1.weight"], fresh["text_head.fc1.weight"])

    # A grounding run of the no-latent twin starts from the encoder alone (other heads, other variant).
    ground = _cfg(data, variant="lvg-tiny-nolatent", stage="ground", lr=1e-9, weight_decay=0.0,
                  init_from=str(tmp_path / "full" / "last.safetensors"), init_parts="backbone", steps=1)
    done = train(ground, tmp_path / "ground", show_progress=False)
    got = read_checkpoint_tensors(done.checkpoint)
    for k, v in got.items():
        if k.startswith("beit3."):
            assert torch.allclose(v, a[k], atol=1e-6), k
    with pytest.raises(Exception, match="does not match"):
        train(ground.replace(init_parts="all"), tmp_path / "ground2", show_progress=False)


def test_bf16_autocast_runs_on_cpu(tmp_path: Path, synth_dataset) -> None:
    cfg = _cfg(synth_dataset.out_dir, stage="ground", steps=2, amp="bf16", sentences_per_image=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AmpWarning)
        result = train(cfg, tmp_path / "bf16", show_progress=False)
    assert np.isfinite(result.history[-1]["loss"])
    with pytest.warns(AmpWarning, match="fp16 needs CUDA"):
        train(cfg.replace(amp="fp16"), tmp_path / "fp16", show_progress=False)


def test_pretraining_needs_attributes() -> None:
    # A COCO annotation (RefCOCO's) has a category but no attributes: pretraining says which data it needs.
    with pytest.raises(ConfigError, match="per-object attributes"):
        _object_attributes({"id": 1, "category_id": 1, "segmentation": []}, {1: "person"})


@pytest.fixture(scope="module")
def grounding_run(tmp_path_factory: pytest.TempPathFactory, synth_dataset) -> Path:
    """One step of lvg-tiny grounding: the checkpoint the --init-parts tests start from."""
    out = tmp_path_factory.mktemp("grounding")
    return train(_cfg(synth_dataset.out_dir, stage="ground", steps=1), out, show_progress=False).checkpoint


def _started_from(ckpt: Path, data: Path, out: Path, *, variant: str, parts: str) -> dict[str, torch.Tensor]:
    """The weights of a one-step run of ``variant`` from ``ckpt`` at a learning rate too small to move them."""
    cfg = _cfg(data, variant=variant, stage="ground", lr=1e-9, weight_decay=0.0, init_from=str(ckpt),
               init_parts=parts, steps=1)
    return read_checkpoint_tensors(train(cfg, out, show_progress=False).checkpoint, model_only=True)


@pytest.mark.parametrize(("variant", "parts", "only_in"), [
    # Table 4 at equal footing: the no-latent model takes all of its tensors from the latent model's run and
    # leaves out the latent-expression modules it does not have.
    ("lvg-tiny-nolatent", "shared", "latent_init."),
    # A 1/2-scale-map variant grown through the trainer, in small: its targets are at 1/2 scale (a 1/4-scale
    # target would not fit its map) and every tensor of the plain run is taken as it is; the stem is its own.
    # (A stride-4 stem's transfer to stride 2 is tests/modeling/test_model.py's.)
    ("lvg-tiny-xy-stem-fine", "grow", "pixel_decoder.stem."),
])
def test_a_twin_starts_from_every_weight_it_shares_with_a_run(
        tmp_path: Path, synth_dataset, grounding_run: Path, variant: str, parts: str, only_in: str) -> None:
    got = _started_from(grounding_run, synth_dataset.out_dir, tmp_path / "twin", variant=variant, parts=parts)
    src = read_checkpoint_tensors(grounding_run, model_only=True)
    fewer, more = (got, src) if parts == "shared" else (src, got)
    assert set(fewer) < set(more) and any(k.startswith(only_in) for k in set(more) - set(fewer))
    for k in fewer:
        assert torch.allclose(got[k], src[k], atol=1e-6), k
    if parts == "shared":
        # The other way round the file lacks tensors the model has: refused, not silently left at random.
        with pytest.raises(Exception, match="missing|does not match"):
            _started_from(tmp_path / "twin" / "last.safetensors", synth_dataset.out_dir, tmp_path / "back",
                          variant="lvg-tiny", parts="shared")


def test_a_variant_with_position_features_grows_from_a_run_without_them(
        tmp_path: Path, synth_dataset, grounding_run: Path) -> None:
    # lvg-s-xy from an lvg-s run: every tensor of the file, the position features from their initialisation.
    data = synth_dataset.out_dir
    got = _started_from(grounding_run, data, tmp_path / "xy", variant="lvg-tiny-xy", parts="grow")
    src = read_checkpoint_tensors(grounding_run, model_only=True)
    assert set(got) - set(src) == {"pixel_decoder.positions.weight", "pixel_decoder.positions.bias"}
    for k, v in src.items():
        assert torch.allclose(got[k], v, atol=1e-6), k
    assert got["pixel_decoder.positions.weight"].abs().max() > 0.05  # initialised, not left at zero
    # A file with tensors the model lacks does not grow into it.
    with pytest.raises(Exception, match="unexpected|does not fit"):
        _started_from(tmp_path / "xy" / "last.safetensors", data, tmp_path / "shrink", variant="lvg-tiny",
                      parts="grow")


def test_a_finer_patch_variant_starts_from_a_run_resampled(
        tmp_path: Path, synth_dataset, grounding_run: Path) -> None:
    # lvg-s-xy-stem-p16 from an lvg-s-xy-stem run, in small, through the trainer: the run reads 320x320 images
    # and starts from the file's weights with the patch grid's tensors resized.
    data = synth_dataset.out_dir
    got = _started_from(grounding_run, data, tmp_path / "p16", variant="lvg-tiny-p16", parts="resample")
    src = read_checkpoint_tensors(grounding_run, model_only=True)
    kernel = "beit3.vision_embed.proj.weight"
    assert got[kernel].shape[-1] == 16
    torch.testing.assert_close(got[kernel], resample_patch_kernel(src[kernel], 16), atol=1e-6, rtol=0)
    assert torch.allclose(got["text_head.fc1.weight"], src["text_head.fc1.weight"], atol=1e-6)
    with pytest.raises(Exception, match="does not match 'lvg-tiny-p16'"):
        _started_from(grounding_run, data, tmp_path / "all", variant="lvg-tiny-p16", parts="all")
