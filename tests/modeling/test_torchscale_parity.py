"""Our BEiT-3 encoder equals torchscale's reference ``BEiT3`` (0.3.0) given the same weights."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from lvg.config import EncoderConfig
from lvg.modeling.encoder import BEiT3


def _drop_path(x, drop_prob: float = 0.0, training: bool = False):
    # Stand-in for timm's drop_path (timm needs torchvision, which has no CPU build here).
    if drop_prob == 0.0 or not training:
        return x
    keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - drop_prob)
    return x * keep / (1 - drop_prob)


@pytest.fixture(scope="module")
def torchscale_beit3():
    pytest.importorskip("fairscale", reason="torchscale needs fairscale")
    stubs = {}
    if "timm" not in sys.modules:
        timm = types.ModuleType("timm")
        models = types.ModuleType("timm.models")
        layers = types.ModuleType("timm.models.layers")
        layers.drop_path = _drop_path
        timm.models, models.layers = models, layers
        stubs = {"timm": timm, "timm.models": models, "timm.models.layers": layers}
        sys.modules.update(stubs)
    try:
        ts_config = pytest.importorskip("torchscale.architecture.config", reason="torchscale not installed")
        ts_beit3 = pytest.importorskip("torchscale.model.BEiT3")
        yield ts_config.EncoderConfig, ts_beit3.BEiT3
    finally:
        for name in stubs:
            sys.modules.pop(name, None)


CFG = EncoderConfig(img_size=96, patch_size=16, embed_dim=64, depth=3, num_heads=4, ffn_dim=160, vocab_size=300,
                    max_text_positions=64)


def _reference(EncoderConfigTS, BEiT3TS, cfg: EncoderConfig):
    args = EncoderConfigTS(
        img_size=cfg.img_size, patch_size=cfg.patch_size, vocab_size=cfg.vocab_size, multiway=True,
        layernorm_embedding=False, normalize_output=True, no_output_layer=True, drop_path_rate=0.0,
        encoder_embed_dim=cfg.embed_dim, encoder_attention_heads=cfg.num_heads,
        encoder_ffn_embed_dim=cfg.ffn_dim, encoder_layers=cfg.depth, max_source_positions=cfg.max_text_positions,
    )
    return BEiT3TS(args)


def test_state_dict_keys_are_official(torchscale_beit3):
    ref = _reference(*torchscale_beit3, CFG)
    ours = BEiT3(CFG)
    ref_keys = set(ref.state_dict()) - {"vision_embed.mask_token"}  # pretraining-only token
    assert set(ours.state_dict()) == ref_keys
    for k, v in ours.state_dict().items():
        assert tuple(v.shape) == tuple(ref.state_dict()[k].shape), k


def test_encoder_matches_torchscale(torchscale_beit3):
    torch.manual_seed(0)
    ref = _reference(*torchscale_beit3, CFG).eval()
    # Random (not default-initialised) weights everywhere, LayerNorm affine included.
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.2)
    ours = BEiT3(CFG).eval()
    state = {k: v for k, v in ref.state_dict().items() if k != "vision_embed.mask_token"}
    ours.load_state_dict(state, strict=True)

    b, length = 3, 12
    image = torch.randn(b, 3, CFG.img_size, CFG.img_size)
    ids = torch.randint(4, CFG.vocab_size, (b, length))
    lengths = torch.tensor([12, 7, 3])
    valid = torch.arange(length)[None] < lengths[:, None]  # (B, L) True = real token
    ids = ids.masked_fill(~valid, 1)  # pad id
    with torch.no_grad():
        expected = ref(textual_tokens=ids, visual_tokens=image, text_padding_position=~valid)["encoder_out"]
        got = ours(image, ids, valid)
    assert got.shape == expected.shape
    # Padded positions carry no meaning in either model; compare every real token.
    keep = torch.cat([torch.ones(b, got.shape[1] - length, dtype=torch.bool), valid], dim=1)
    diff = (got - expected).abs()[keep]
    assert diff.max().item() < 1e-4, diff.max().item()
