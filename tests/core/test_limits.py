"""Bounds before allocation: a model file's config and tensor table are checked against sane bounds and each
other before any model is built or session created (lvg/core/limits.py, through ModelFile.open)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from lvg.config import get_config
from lvg.core.model_file import ModelFile
from lvg.errors import ArtifactError, CheckpointError
from tests.helpers.hostile import PeakMemory, rewrite_safetensors


def _lvg_b_sized_encoder(cfg):
    """``cfg`` with BEiT-3 base's encoder (220M parameters) under lvg-tiny's heads: ~370x lvg-tiny's tensors."""
    enc = replace(cfg.encoder, embed_dim=768, num_heads=12, ffn_dim=3072, depth=12, vocab_size=64010)
    return cfg.replace(encoder=enc)


def test_checkpoint_declaring_a_model_100x_its_tensors_is_refused_before_allocation(artifacts, tmp_path: Path) -> None:
    from lvg.runtime.grounder import Grounder

    huge = _lvg_b_sized_encoder(get_config("lvg-tiny"))
    path = rewrite_safetensors(artifacts.ckpt["lvg-tiny"], tmp_path / "huge.safetensors",
                               metadata={"config": huge.to_json()})
    assert path.stat().st_size < 5_000_000
    with PeakMemory() as peak:
        start = time.perf_counter()
        with pytest.raises(CheckpointError) as info:
            Grounder.load(path, device="cpu")
        seconds = time.perf_counter() - start
    # The memory bound is the check (an lvg-b-sized encoder is ~350 MiB of weights); the time bound, generous
    # for a machine shared with other jobs, only catches work far beyond reading a header (milliseconds).
    assert seconds < 10.0 and peak.growth_mib < 300, (seconds, peak.growth_mib)
    message = str(info.value)
    assert "does not fit its config" in message and "huge.safetensors" in message and "\n" not in message
    # Every way in (lvg info reads the config alone, lvg export and --init open it as a checkpoint) is refused.
    with pytest.raises(CheckpointError, match="does not fit its config"):
        ModelFile.open(path, checkpoint=True)


def test_header_tensor_table_is_checked_against_the_file(artifacts, tmp_path: Path) -> None:
    src = artifacts.ckpt["lvg-tiny"]

    def grow(header):  # a tensor claims more bytes than its shape holds
        header["text_head.fc1.weight"]["data_offsets"][1] += 4

    def dtype(header):
        header["text_head.fc1.weight"]["dtype"] = "F128"

    def shape(header):
        header["text_head.fc1.weight"]["shape"] = [-1, 64]

    for edit, pattern in ((grow, "text_head.fc1.weight"), (dtype, "dtype"), (shape, "shape")):
        bad = rewrite_safetensors(src, tmp_path / "bad.safetensors", edit=edit)
        with pytest.raises(CheckpointError, match=pattern):
            ModelFile.open(bad)
    # Tensor data cut short with the header intact: refused from the header and the file size alone.
    data = src.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="truncated"):
        ModelFile.open(tmp_path / "cut.safetensors")


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda c: c.replace(encoder=replace(c.encoder, depth=10_000)), "depth"),
        (lambda c: c.replace(encoder=replace(c.encoder, img_size=96_000),
                             preprocess=replace(c.preprocess, size=96_000)), "img_size"),
        (lambda c: c.replace(preprocess=replace(c.preprocess, mask_threshold=float("nan"))), "mask_threshold"),
        (lambda c: c.replace(preprocess=replace(c.preprocess, std=(0.5, 0.0, 0.5))), "std"),
        (lambda c: c.replace(latent=replace(c.latent, num_concepts=10**9)), "num_concepts"),
    ],
)
def test_configs_outside_sane_bounds_are_refused(micro, tmp_path: Path, change, pattern: str) -> None:
    from tests.helpers.hostile import set_onnx_metadata
    from tests.helpers.micro_model import micro_config

    cfg = change(micro_config("lvg-tiny"))
    bad = set_onnx_metadata(micro.onnx, tmp_path / "bad.onnx", {"lvg.config": cfg.to_json()})
    with pytest.raises(ArtifactError, match=pattern) as info:
        ModelFile.open(bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("variant", ["lvg-b", "lvg-b-nolatent", "lvg-b-gres", "lvg-s", "lvg-tiny", "lvg-tiny-gres"])
def test_parameter_estimate_is_a_tight_lower_bound(variant: str) -> None:
    # The bound the tensor table is held to must never refuse a real model, and must be close enough to
    # bound what a forged config can make lvg allocate.
    import torch

    from lvg.core.limits import estimated_parameters
    from lvg.modeling.latent_vg import LatentVG

    cfg = get_config(variant)
    with torch.device("meta"):
        real = sum(t.numel() for t in LatentVG(cfg.replace(kernel_impl="reference")).state_dict().values())
    assert 0.99 * real <= estimated_parameters(cfg) <= real
