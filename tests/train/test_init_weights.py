"""lvg.train.init_weights: which tensors of a saved run start a model of another variant, through real files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from lvg.config import get_config
from lvg.core.model_file import ModelFile
from lvg.errors import CheckpointError
from lvg.modeling import build_model, save_checkpoint
from lvg.modeling.checkpoint import resample_patch_kernel, resample_vision_positions
from lvg.train.init_weights import init_model


def _saved(tmp_path: Path, cfg) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    model = build_model(cfg)
    path = tmp_path / f"{model.cfg.name}.safetensors"
    save_checkpoint(model, path)
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def test_common_takes_what_both_have_and_keeps_the_rest_of_the_model(tmp_path: Path) -> None:
    # Table 4's latent-off twin of an xy model from a run of the plain model: the file has latent modules the
    # twin lacks, the twin has position features the file lacks.
    path, src = _saved(tmp_path, "lvg-tiny")
    torch.manual_seed(2)
    twin = build_model("lvg-tiny-xy-nolatent")
    before = {k: v.clone() for k, v in twin.state_dict().items()}
    taken = init_model(twin, ModelFile.open(path, checkpoint=True), "common")
    got = twin.state_dict()
    shared = set(src) & set(got)
    assert set(got) - shared == {"pixel_decoder.positions.weight", "pixel_decoder.positions.bias"}
    assert any(k.startswith("latent_init.") for k in set(src) - shared)
    for k in shared:
        assert torch.equal(got[k], src[k]), k
    for k in set(got) - shared:
        assert torch.equal(got[k], before[k]), k
    assert taken.startswith(f"{len(shared)} tensors (common); left out {len(set(src) - shared)} of the file's")


def test_common_refuses_a_file_without_the_whole_encoder(tmp_path: Path) -> None:
    # A model one layer deeper than the file would keep that layer at random: refused, naming an encoder tensor.
    path, _ = _saved(tmp_path, "lvg-tiny")
    twin = get_config("lvg-tiny-xy-nolatent")
    deeper = twin.replace(encoder=dataclasses.replace(twin.encoder, depth=twin.encoder.depth + 1))
    with pytest.raises(CheckpointError, match=r"whole encoder: \d+ encoder tensors missing \(e.g. beit3\."):
        init_model(build_model(deeper), ModelFile.open(path, checkpoint=True), "common")


def test_common_refuses_a_shared_tensor_of_another_shape(tmp_path: Path) -> None:
    base = get_config("lvg-tiny")
    wider = base.replace(name="wider", head=dataclasses.replace(base.head, mlp_hidden=base.head.mlp_hidden * 2))
    path, _ = _saved(tmp_path, wider)
    with pytest.raises(CheckpointError, match="of another shape"):
        init_model(build_model("lvg-tiny-xy-nolatent"), ModelFile.open(path, checkpoint=True), "common")


@pytest.mark.parametrize("parts", ["shared", "grow"])
def test_one_sided_modes_refuse_what_common_accepts(tmp_path: Path, parts: str) -> None:
    # Each one-sided mode insists on its side being whole; the twin above breaks both.
    path, _ = _saved(tmp_path, "lvg-tiny")
    with pytest.raises(CheckpointError, match="does not fit"):
        init_model(build_model("lvg-tiny-xy-nolatent"), ModelFile.open(path, checkpoint=True), parts)


@pytest.mark.parametrize(("source", "target"), [("lvg-tiny", "lvg-tiny-p16"), ("lvg-tiny-p16", "lvg-tiny")])
def test_resample_fits_a_run_to_another_patch_size(tmp_path: Path, source: str, target: str) -> None:
    # lvg-s-xy-stem-p16 from an lvg-s-xy-stem run, in small: every tensor taken, the three that depend on the
    # patch grid resized, and the decoder's upsampling stages aligned at the output end.
    path, src = _saved(tmp_path, source)
    torch.manual_seed(2)
    model = build_model(target)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    taken = init_model(model, ModelFile.open(path, checkpoint=True), "resample")
    got = model.state_dict()
    kernel, table = "beit3.vision_embed.proj.weight", "beit3.encoder.embed_positions.A.weight"
    assert torch.equal(got[kernel], resample_patch_kernel(src[kernel], got[kernel].shape[-1]))
    assert torch.equal(got[table], resample_vision_positions(src[table], got[table].shape[0]))
    up = "pixel_decoder.upsample."
    # Three modules per stage (ConvTranspose2d, GroupNorm, GELU): module i belongs to stage i // 3.
    src_stages, own_stages = (len({int(k.split(".")[2]) // 3 for k in s if k.startswith(up)}) for s in (src, got))
    shift = 3 * (own_stages - src_stages)
    for k, v in got.items():
        if k.startswith(up):
            index, rest = k[len(up):].split(".", 1)
            mapped = f"{up}{int(index) - shift}.{rest}"
            assert torch.equal(v, src[mapped] if mapped in src else before[k]), k
        elif k not in (kernel, table):
            assert torch.equal(v, src[k]), k
    assert f"patch kernel {src[kernel].shape[-1]} -> {got[kernel].shape[-1]}" in taken
    assert f"decoder upsampling stages {src_stages} -> {own_stages}" in taken


def test_resample_refuses_other_modules(tmp_path: Path) -> None:
    # Only the patch grid may differ: a model with modules the file lacks is not silently half-initialised.
    path, _ = _saved(tmp_path, "lvg-tiny")
    with pytest.raises(CheckpointError, match="does not fit"):
        init_model(build_model("lvg-tiny-xy"), ModelFile.open(path, checkpoint=True), "resample")
