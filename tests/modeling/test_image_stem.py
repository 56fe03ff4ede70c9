"""The image stem on tiny variants: its features in the decoder's map, at 1/2 scale, and in the patch tokens
(grown from a model without them, each starts with that model's function)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lvg.config import get_config
from lvg.modeling import build_model
from tests.modeling.conftest import assert_zero_start_learns, grow_unchanged, make_inputs


def test_image_stem_grows_a_model_without_changing_it_then_follows_the_pixels():
    """lvg-tiny-xy-stem with lvg-tiny-xy's weights predicts exactly what lvg-tiny-xy does (the stem's projection
    starts at zero); once the projection is not zero, a pixel's logit depends on that pixel of the image."""
    _, stem, (image, ids, mask) = grow_unchanged("lvg-tiny-xy", "lvg-tiny-xy-stem", "pixel_decoder.stem", seed=4,
                                                 batch=1)
    with torch.no_grad():
        stem.pixel_decoder.stem_proj.weight.normal_()
        before = stem(image, ids, mask)["logits"]  # (1, J, 120, 120)
        changed = image.clone()
        changed[..., 200:204, 200:204] += 3.0  # a few pixels of the image: 1/4-scale cells 50
        diff = (stem(image, ids, mask)["logits"] - before).abs()
        after = (stem(changed, ids, mask)["logits"] - before).abs()
    assert diff.max() == 0
    assert after[..., 49:52, 49:52].max() > 10 * after[..., :30, :30].max()  # where the pixels changed, mostly
    with pytest.raises(ValueError, match="pass image="):
        stem.pixel_decoder(*_decoder_inputs(stem))


def test_image_stem_learns_from_the_second_step():
    torch.manual_seed(6)
    model = build_model("lvg-tiny-xy-stem").train()
    stem = [p for n, p in model.named_parameters() if n.startswith("pixel_decoder.stem.")]
    assert_zero_start_learns(model, make_inputs(model.cfg, batch=2), model.pixel_decoder.stem_proj.weight, stem,
                             lr=0.1)


@pytest.mark.parametrize("small,big", [("lvg-tiny-xy-stem", "lvg-tiny-xy-stem-tokens"),
                                       ("lvg-tiny-xy-stem-relpos", "lvg-tiny-xy-stem-relpos-tokens")])
def test_stem_tokens_grow_a_model_without_changing_it_then_feed_the_encoder(small, big):
    """A stem-tokens model with its twin's weights predicts exactly what that model does (the projection
    starts at zero); once it is not zero, the patch tokens carry the stem's features (read at 1/4 or, with the
    1/2-scale map, 1/2 scale), and both the projection and the convolutions behind it learn (the convolutions
    from the second step)."""
    stem, model, (image, ids, mask) = grow_unchanged(small, big, "stem_tokens.", seed=7)
    model.train()
    convs = [p for n, p in model.named_parameters() if n.startswith("stem_tokens.down.")]
    assert_zero_start_learns(model, (image, ids, mask), model.stem_tokens.proj.weight, convs, lr=0.5)
    model.eval()
    with torch.no_grad():
        tokens = model.stem_tokens(model.pixel_decoder.pixels(image))  # (B, n, d)
        assert tokens.shape == (2, model.cfg.encoder.num_patches, model.cfg.encoder.embed_dim)
        assert tokens.abs().amax() > 0
        assert (model(image, ids, mask)["logits"] - stem(image, ids, mask)["logits"]).abs().amax() > 0


def test_stem_tokens_need_the_image_stem():
    from lvg.config import get_config
    from lvg.errors import ConfigError

    base = get_config("lvg-tiny-xy")
    with pytest.raises(ConfigError, match="stem_tokens reads the image stem"):
        base.replace(head=dataclasses.replace(base.head, stem_tokens=True))


def test_map_stride_2_reads_a_stride_4_runs_weights_at_twice_the_resolution():
    """lvg-tiny-xy-stem-fine takes every tensor of lvg-tiny-xy-stem: its stem's second convolution gives the
    stride-4 stem's outputs at every other position, its map without the stem's share is the stride-4 map
    upsampled bilinearly, and a change to a 2x2 block of pixels moves mostly the 1/2-scale cells over it."""
    torch.manual_seed(8)
    coarse = build_model("lvg-tiny-xy-stem").eval()
    fine = build_model("lvg-tiny-xy-stem-fine").eval()
    fine.load_state_dict(coarse.state_dict())  # strict: the same tensors
    image, ids, mask = make_inputs(fine.cfg, batch=1)
    with torch.no_grad():
        half_c = coarse.pixel_decoder.stem[:3](image)  # (1, s, 240, 240): the first convolution, shared
        torch.testing.assert_close(fine.pixel_decoder.stem[:3](image), half_c, rtol=0, atol=0)
        conv_c, conv_f = coarse.pixel_decoder.stem[3](half_c), fine.pixel_decoder.stem[3](half_c)
        assert conv_c.shape[-1] == 120 and conv_f.shape[-1] == 240
        torch.testing.assert_close(conv_f[..., ::2, ::2], conv_c, rtol=1e-5, atol=1e-5)
        # With the stem's projection at zero (a model grown from one without the stem) the map is the coarse
        # one upsampled: nothing else differs.
        up = torch.nn.functional.interpolate(coarse(image, ids, mask)["logits"], scale_factor=2, mode="bilinear")
        torch.testing.assert_close(fine(image, ids, mask)["logits"], up, rtol=1e-4, atol=1e-4)
        fine.pixel_decoder.stem_proj.weight.normal_()
        before = fine(image, ids, mask)["logits"]  # (1, J, 240, 240)
        changed = image.clone()
        changed[..., 200:202, 200:202] += 3.0  # a 2x2 block of pixels: 1/2-scale cell 100
        after = (fine(changed, ids, mask)["logits"] - before).abs()
    assert after[..., 99:102, 99:102].max() > 10 * after[..., :60, :60].max()
    peak = divmod(int(after.amax(dim=1)[0].argmax()), 240)  # (row, column) of the largest change
    assert all(99 <= i <= 101 for i in peak), peak


def test_map_stride_is_4_or_2_and_2_needs_the_stem():
    from lvg.errors import ConfigError

    stem = get_config("lvg-tiny-xy-stem")
    for head, match in [(dataclasses.replace(stem.head, map_stride=3), "must be 4 or 2"),
                        (dataclasses.replace(get_config("lvg-tiny-xy").head, map_stride=2), "needs head.image_stem"),
                        (dataclasses.replace(stem.head, stem_tokens=True, stem_tokens_width=-1), "stem_tokens_width")]:
        with pytest.raises(ConfigError, match=match):
            stem.replace(head=head)


def _decoder_inputs(model):
    n, d = model.cfg.encoder.num_patches, model.cfg.encoder.embed_dim
    return [torch.randn(1, n, d) for _ in model.cfg.head.pyramid_layers], torch.randn(1, 2, model.cfg.head.embed_dim)
