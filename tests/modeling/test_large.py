"""lvg-l: BEiT-3 large under the same model. Its backbone is torchscale 0.3.0's ``BEiT3`` with the large
settings (24 layers, width 1024, 16 heads, FFN 4096), key for key and parameter for parameter.

Both models are built on the meta device: no weights are allocated (BEiT-3 large is ~0.7B parameters).
"""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from lvg.cli import app
from lvg.config import get_config
from lvg.modeling.encoder import BEiT3
from tests.modeling.test_torchscale_parity import _reference, torchscale_beit3

__all__ = ["torchscale_beit3"]


def test_large_variants_are_beit3_large():
    for name in ("lvg-l", "lvg-l-gres"):
        enc = get_config(name).encoder
        # BEiT-3 large (microsoft/unilm beit3 README, "BEiT3-large": 24 layers, hidden 1024, 16 heads).
        assert (enc.depth, enc.embed_dim, enc.num_heads, enc.ffn_dim) == (24, 1024, 16, 4096)
        assert enc.patch_size == 16 and enc.img_size == 480 and enc.vocab_size == 64010
    assert get_config("lvg-l-gres").head.gres and not get_config("lvg-l-gres").latent.subject_distributor
    assert get_config("lvg-l").latent == get_config("lvg-b").latent


def test_large_backbone_keys_and_parameters_equal_torchscale(torchscale_beit3):
    enc = get_config("lvg-l").encoder
    with torch.device("meta"):
        ref = _reference(*torchscale_beit3, enc)
        ours = BEiT3(enc)
    ref_state = {k: v for k, v in ref.state_dict().items() if k != "vision_embed.mask_token"}
    ours_state = ours.state_dict()
    assert set(ours_state) == set(ref_state)
    for key, value in ours_state.items():
        assert tuple(value.shape) == tuple(ref_state[key].shape), key
    n_ref = sum(p.numel() for n, p in ref.named_parameters() if n != "vision_embed.mask_token")
    assert sum(p.numel() for p in ours.parameters()) == n_ref


def test_info_reports_large_params_and_gflops():
    result = CliRunner().invoke(app, ["info", "--variant", "lvg-l", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    base = json.loads(CliRunner().invoke(app, ["info", "--variant", "lvg-b", "--json"]).output)
    # BEiT-3 large is about 3.5x base's parameters (the multiway encoder: ~0.7B vs ~0.22B).
    assert 3.0 < data["params"]["backbone"] / base["params"]["backbone"] < 3.5
    assert data["gflops"]["total"] > 3 * base["gflops"]["total"]
    assert data["config"]["encoder"]["depth"] == 24 and data["tokens"]["total"] == base["tokens"]["total"]
