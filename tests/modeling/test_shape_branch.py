"""The shape branch on a tiny variant: grown from a model without it, it starts with that model's function;
then the map reads its features, which change no patch token, and it learns."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lvg.config import get_config
from lvg.errors import ConfigError
from lvg.modeling import build_model
from tests.modeling.conftest import assert_zero_start_learns, grow_unchanged, make_inputs


def _grown_and_trained(small: str, big: str, new: str, seed: int, off: str | None = None):
    """``big`` grown from ``small`` (unchanged, :func:`grow_unchanged`), its zero-started projection ``new``
    (``shape_branch.<new>``) learning at once and the convolutions behind it from the second step (with the
    projection ``off`` held at zero), then both models' outputs with every weight but ``new`` shared."""
    old, model, (image, ids, mask) = grow_unchanged(small, big, f"shape_branch.{new if off else ''}", seed=seed)
    model.train()
    if off:
        with torch.no_grad():
            getattr(model.shape_branch, off).weight.zero_()  # only the path under test reaches the output
    convs = [p for n, p in model.named_parameters() if n.startswith("shape_branch.down.")]
    assert_zero_start_learns(model, (image, ids, mask), getattr(model.shape_branch, new).weight, convs, lr=0.5)
    model.eval()
    prefix = f"shape_branch.{new}." if off else "shape_branch."
    old.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(prefix)})
    with torch.no_grad():
        return model, image, model(image, ids, mask), old(image, ids, mask)


def test_the_shape_branch_grows_a_model_without_changing_it_then_feeds_the_map():
    model, _, out, without = _grown_and_trained("lvg-tiny-xy-stem-relpos", "lvg-tiny-xy-stem-relpos-branch",
                                                "to_map", seed=8)
    assert (out["logits"] - without["logits"]).abs().amax() > 0
    assert torch.equal(out["patch_tokens"], without["patch_tokens"])  # the encoder never reads the branch
    g = model.cfg.encoder.grid
    assert out["shape_grid"].shape == (2, g * g, model.shape_branch.channels)
    assert "shape_grid" not in without


def test_the_shape_branch_tokens_grow_a_branch_model_without_changing_it_then_feed_the_encoder():
    model, image, out, without = _grown_and_trained("lvg-tiny-xy-stem-relpos-branch",
                                                    "lvg-tiny-xy-stem-relpos-branch-tokens", "to_tokens", seed=9,
                                                    off="to_map")
    with torch.no_grad():
        tokens = model.shape_branch.tokens(model.shape_branch.grid(image))  # (B, n, d)
    assert tokens.shape == (2, model.cfg.encoder.num_patches, model.cfg.encoder.embed_dim)
    assert (out["patch_tokens"] - without["patch_tokens"]).abs().amax() > 0  # now the encoder reads the branch


def test_a_context_block_grows_a_branch_model_without_changing_it_then_widens_what_a_patch_sees():
    torch.manual_seed(4)
    old = build_model("lvg-tiny-xy-stem-relpos-branch-tokens").eval()
    with torch.no_grad():  # a trained branch reaches the map: the blocks' effect must show in the output
        old.shape_branch.to_map.weight.normal_(std=0.5)
    model = build_model("lvg-tiny-xy-stem-relpos-branch-tokens-ctx").eval()
    missing, unexpected = model.load_state_dict(old.state_dict(), strict=False)
    assert missing and all(k.startswith("shape_branch.context.") for k in missing) and not unexpected
    image, ids, mask = make_inputs(model.cfg, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(model(image, ids, mask)["logits"], old(image, ids, mask)["logits"], rtol=0, atol=0)
    block = model.shape_branch.context[0]
    model.train()
    assert_zero_start_learns(model, (image, ids, mask), block.mix.weight, [block.spread.weight], lr=0.5)
    model.eval()
    # What the block adds to a cell reads the cells up to 2 away (5x5 over the patch grid: 128 more pixels).
    g = model.cfg.encoder.grid
    delta = torch.zeros(1, model.shape_branch.channels, g, g)
    delta[0, :, g // 2, g // 2] = 1.0
    with torch.no_grad():
        moved = (block(delta) - block(torch.zeros_like(delta))).abs().sum(1)[0] > 0  # (g, g)
    rows, cols = moved.nonzero().T
    assert int((rows - g // 2).abs().max()) == 2 and int((cols - g // 2).abs().max()) == 2


def test_the_branch_logits_grow_a_model_without_changing_it_then_let_each_expression_weigh_the_branch():
    old, model, inputs = grow_unchanged("lvg-tiny-xy-stem-relpos-branch-tokens-ctx",
                                        "lvg-tiny-xy-stem-relpos-branch-tokens-ctx-logits", "shape_branch.to_words.",
                                        seed=5)
    model.train()
    assert_zero_start_learns(model, inputs, model.shape_branch.to_words.weight, [], lr=0.5)
    model.eval()
    with torch.no_grad():
        out, without = model(*inputs), old(*inputs)
        # The term is exactly the grid weighed per expression and upsampled: recompute it by hand.
        grid = model.shape_branch.grid(inputs[0])  # (B, w, g, g)
        emb = torch.cat([out["text_embedding"][:, None], out["latent_embeddings"]], dim=1)  # (B, 1+N, E)
        weights = emb @ model.shape_branch.to_words.weight.T + model.shape_branch.to_words.bias  # (B, 1+N, w)
        per_patch = (grid[:, None] * weights[:, :, :, None, None]).sum(2)  # (B, 1+N, g, g)
        term = torch.nn.functional.interpolate(per_patch, size=out["logits"].shape[-2:], mode="bilinear")
    assert term.abs().amax() > 0
    torch.testing.assert_close(model.shape_branch.logits(grid, emb, out["logits"].shape[-2:]), term)
    assert (out["logits"] - without["logits"]).abs().amax() > 0
    with pytest.raises(ValueError, match="adds no logits"):
        old.shape_branch.logits(grid, emb, (4, 4))


def test_the_gated_branch_logits_act_only_where_the_map_is_on():
    torch.manual_seed(6)
    plain = build_model("lvg-tiny-xy-stem-relpos-branch-tokens-ctx").eval()
    gated = build_model("lvg-tiny-xy-stem-relpos-branch-tokens-ctx-gated").eval()
    missing, _ = gated.load_state_dict(plain.state_dict(), strict=False)
    assert all(k.startswith("shape_branch.to_words.") for k in missing)
    with torch.no_grad():
        gated.shape_branch.to_words.weight.normal_(std=0.5)
    inputs = make_inputs(gated.cfg, batch=2)
    with torch.no_grad():
        out, without = gated(*inputs), plain(*inputs)
        emb = torch.cat([out["text_embedding"][:, None], out["latent_embeddings"]], dim=1)  # (B, 1+N, E)
        term = gated.shape_branch.logits(gated.shape_branch.grid(inputs[0]), emb, out["logits"].shape[-2:])
    # The candidate-position coefficients start at zero, so the only difference is the gated term.
    assert gated.candidate_position is not None and not gated.candidate_position.coefficients.weight.any()
    assert term.abs().amax() > 0
    torch.testing.assert_close(out["logits"] - without["logits"], without["logits"].sigmoid() * term,
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="shape_branch_logits_gate gates the branch's logits"):
        get_config("lvg-tiny-xy-stem-relpos-branch-tokens-ctx").replace(
            head=dataclasses.replace(get_config("lvg-tiny-xy-stem-relpos-branch-tokens-ctx").head,
                                     shape_branch_logits_gate=True))


def test_the_shape_branch_reaches_the_patch_grid_for_every_patch_size():
    for name in ("lvg-tiny-xy-stem-relpos-branch", "lvg-s-xy-stem-relpos-branch",
                 "lvg-s-xy-stem-relpos-branch-tokens", "lvg-s-xy-stem-relpos-branch-tokens-ctx"):
        cfg = get_config(name)
        model = build_model(name).eval()
        with torch.no_grad():
            grid = model.shape_branch.grid(torch.zeros(1, 3, cfg.encoder.img_size, cfg.encoder.img_size))
        assert grid.shape == (1, cfg.head.shape_branch, cfg.encoder.grid, cfg.encoder.grid)
    # The bundled model's budget: the branch adds under 45k parameters, 55k with its tokens' projection.
    assert sum(p.numel() for p in build_model("lvg-s-xy-stem-relpos-branch").shape_branch.parameters()) < 45_000
    tokens = build_model("lvg-s-xy-stem-relpos-branch-tokens").shape_branch
    assert sum(p.numel() for p in tokens.parameters()) < 55_000
    # A context block adds under 4k more (depthwise): the fp32 file had 23 kB left under its 30 MB.
    ctx = build_model("lvg-s-xy-stem-relpos-branch-tokens-ctx").shape_branch
    assert sum(p.numel() for p in ctx.parameters()) - sum(p.numel() for p in tokens.parameters()) < 4_000


def test_a_negative_shape_branch_or_tokens_without_one_is_a_config_error():
    base = get_config("lvg-tiny-xy-stem-relpos")
    with pytest.raises(ConfigError, match="head.shape_branch must be 0 .off. or a channel count, got -1"):
        base.replace(head=dataclasses.replace(base.head, shape_branch=-1))
    with pytest.raises(ConfigError, match="shape_branch_tokens reads the shape branch"):
        base.replace(head=dataclasses.replace(base.head, shape_branch_tokens=True))
    with pytest.raises(ConfigError, match="shape_branch_context must be 0 or a block count"):
        base.replace(head=dataclasses.replace(base.head, shape_branch_context=1))
    with pytest.raises(ConfigError, match="shape_branch_logits reads the shape branch"):
        base.replace(head=dataclasses.replace(base.head, shape_branch_logits=True))
    with pytest.raises(ValueError, match="feeds no tokens"):
        build_model("lvg-tiny-xy-stem-relpos-branch").shape_branch.tokens(torch.zeros(1, 16, 2, 2))


@pytest.mark.parametrize(("small", "big", "new"), [
    ("lvg-s-xy-stem-fine", "lvg-s-xy-stem-relpos", "candidate_position."),
    ("lvg-s-xy-stem-relpos-branch-tokens-ctx", "lvg-s-xy-stem-relpos-branch-tokens-ctx-logits",
     "shape_branch.to_words."),
])
def test_zero_started_linear_layers_survive_the_models_truncated_normal_initialisation(small, big, new):
    # lvg-s initialises every linear layer from N(0, 0.02^2) after building (encoder.init_std); the layers that
    # start at zero must stay zero, or a grown model does not start with its predecessor's function.
    assert get_config(big).encoder.init_std > 0
    grow_unchanged(small, big, new, seed=7, batch=1)
