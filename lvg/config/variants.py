"""The named variants. Each is a function so that a variant is a value, never shared mutable state."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any

from lvg.config.model import EncoderConfig, HeadConfig, LatentConfig, ModelConfig, PreprocessConfig
from lvg.errors import ConfigError


def lvg_b() -> ModelConfig:
    """The paper's model: BEiT-3 base, N=2 latent expressions of lengths (4, 10), SD and VCI on."""
    return ModelConfig(name="lvg-b")


def lvg_b_nolatent() -> ModelConfig:
    """Table 4's base row: the same backbone and heads, no latent expressions."""
    return ModelConfig(name="lvg-b-nolatent", latent=LatentConfig(enabled=False))


def lvg_b_gres() -> ModelConfig:
    """GRES (Appendix B): empty-token no-target head, subject distributor off."""
    return ModelConfig(
        name="lvg-b-gres",
        latent=LatentConfig(subject_distributor=False),
        head=HeadConfig(gres=True),
    )


def _large_encoder() -> EncoderConfig:
    # BEiT-3 large (beit3_large_patch16_224.pth): 24 layers, width 1024, 16 heads, FFN 4096.
    return EncoderConfig(embed_dim=1024, depth=24, num_heads=16, ffn_dim=4096)


def _large_head(gres: bool = False) -> HeadConfig:
    # decided: base's pyramid taps (4, 6, 8, 12 of 12 layers) at the same depths of 24, and the head widths
    # follow the encoder's (1024, MLP 4096, 16 heads in the empty token's attention).
    return HeadConfig(pyramid_layers=(8, 12, 16, 24), neck_dim=1024, embed_dim=1024, mlp_hidden=4096, gres=gres,
                      empty_heads=16)


def lvg_l() -> ModelConfig:
    """lvg-b on BEiT-3 large: the same latent expressions, VCI and heads, widths following the encoder."""
    return ModelConfig(name="lvg-l", encoder=_large_encoder(), head=_large_head())


def lvg_l_gres() -> ModelConfig:
    """lvg-b-gres on BEiT-3 large."""
    return ModelConfig(name="lvg-l-gres", encoder=_large_encoder(), latent=LatentConfig(subject_distributor=False),
                       head=_large_head(gres=True))


def _tiny_encoder() -> EncoderConfig:
    # 480 input with patch 32 keeps the product's fixed input size while staying CPU-fast (225 patches).
    return EncoderConfig(
        patch_size=32, embed_dim=64, depth=4, num_heads=4, ffn_dim=128, vocab_size=512, max_text_positions=64
    )


def _tiny_head(gres: bool = False) -> HeadConfig:
    # The GRES tiny variant exercises the "cls_mean" class pooling (export parity, padding invariance).
    return HeadConfig(pyramid_layers=(1, 2, 3, 4), neck_dim=32, embed_dim=32, mlp_hidden=64, gres=gres, empty_heads=4,
                      class_pool="cls_mean" if gres else "cls")


def _tiny_pre() -> PreprocessConfig:
    return PreprocessConfig(max_text_len=16, tokenizer="synthetic.spm")


def lvg_tiny() -> ModelConfig:
    """Test-sized model with every part of lvg-b (latent N=2, SD, VCI)."""
    return ModelConfig(
        name="lvg-tiny",
        encoder=_tiny_encoder(),
        latent=LatentConfig(lengths=(2, 3), num_concepts=7),
        head=_tiny_head(),
        preprocess=_tiny_pre(),
    )


def lvg_tiny_nolatent() -> ModelConfig:
    return lvg_tiny().replace(name="lvg-tiny-nolatent", latent=LatentConfig(enabled=False, lengths=(2, 3)))


def lvg_tiny_xy() -> ModelConfig:
    return lvg_tiny().replace(name="lvg-tiny-xy", head=dataclasses.replace(_tiny_head(), pixel_positions=True))


def lvg_tiny_xy_stem() -> ModelConfig:
    return lvg_tiny().replace(name="lvg-tiny-xy-stem",
                              head=dataclasses.replace(_tiny_head(), pixel_positions=True, image_stem=4))


def lvg_tiny_xy_stem_tokens() -> ModelConfig:
    return _with_head(lvg_tiny_xy_stem(), "lvg-tiny-xy-stem-tokens", stem_tokens=True)


def _on_grid(base: ModelConfig, name: str, *, patch: int, size: int) -> ModelConfig:
    """``base`` on ``patch``-pixel patches of a ``size x size`` input (the encoder and preprocessing agree)."""
    return base.replace(name=name, encoder=dataclasses.replace(base.encoder, patch_size=patch, img_size=size),
                        preprocess=dataclasses.replace(base.preprocess, size=size))


def _with_head(base: ModelConfig, name: str, **fields: Any) -> ModelConfig:
    """``base`` renamed ``name`` with these :class:`HeadConfig` fields changed."""
    return base.replace(name=name, head=dataclasses.replace(base.head, **fields))


def _without_latent(base: ModelConfig, name: str) -> ModelConfig:
    """``base`` renamed ``name`` without latent expressions: its twin in the paper's Table 4."""
    return base.replace(name=name, latent=dataclasses.replace(base.latent, enabled=False))


def lvg_tiny_xy_stem_fine() -> ModelConfig:
    """lvg-tiny-xy-stem with its probability map at 1/2 scale, as lvg-s-xy-stem-fine is to lvg-s-xy-stem."""
    return _with_head(lvg_tiny_xy_stem(), "lvg-tiny-xy-stem-fine", map_stride=2)


def lvg_tiny_xy_stem_refine() -> ModelConfig:
    """lvg-tiny-xy-stem-fine with a mask refiner, as lvg-s-xy-stem-refine is to lvg-s-xy-stem-fine."""
    return _with_head(lvg_tiny_xy_stem_fine(), "lvg-tiny-xy-stem-refine", mask_refine=4)


def lvg_tiny_xy_stem_relpos() -> ModelConfig:
    """lvg-tiny-xy-stem-fine with candidate-relative positions, as lvg-s-xy-stem-relpos is to lvg-s-xy-stem-fine."""
    return _with_head(lvg_tiny_xy_stem_fine(), "lvg-tiny-xy-stem-relpos", candidate_positions=True)


def lvg_tiny_xy_stem_relpos_tokens() -> ModelConfig:
    """lvg-tiny-xy-stem-relpos with stem tokens, as lvg-s-xy-stem-relpos-tokens is to lvg-s-xy-stem-relpos."""
    return _with_head(lvg_tiny_xy_stem_relpos(), "lvg-tiny-xy-stem-relpos-tokens", stem_tokens=True)


def lvg_tiny_xy_stem_relpos_branch() -> ModelConfig:
    """lvg-tiny-xy-stem-relpos with a shape branch, as lvg-s-xy-stem-relpos-branch is to lvg-s-xy-stem-relpos."""
    return _with_head(lvg_tiny_xy_stem_relpos(), "lvg-tiny-xy-stem-relpos-branch", shape_branch=16)


def lvg_tiny_xy_stem_relpos_branch_tokens() -> ModelConfig:
    """lvg-tiny-xy-stem-relpos-branch whose branch also feeds the patch tokens, as
    lvg-s-xy-stem-relpos-branch-tokens is to lvg-s-xy-stem-relpos-branch."""
    return _with_head(lvg_tiny_xy_stem_relpos_branch(), "lvg-tiny-xy-stem-relpos-branch-tokens",
                      shape_branch_tokens=True)


def lvg_tiny_xy_stem_relpos_branch_tokens_ctx() -> ModelConfig:
    """lvg-tiny-xy-stem-relpos-branch-tokens with a context block, as lvg-s-xy-stem-relpos-branch-tokens-ctx is
    to lvg-s-xy-stem-relpos-branch-tokens."""
    return _with_head(lvg_tiny_xy_stem_relpos_branch_tokens(), "lvg-tiny-xy-stem-relpos-branch-tokens-ctx",
                      shape_branch_context=1)


def lvg_tiny_xy_stem_relpos_branch_tokens_ctx_match() -> ModelConfig:
    """lvg-tiny-xy-stem-relpos-branch-tokens-ctx with the shape match, as the lvg-s twin."""
    return _with_head(lvg_tiny_xy_stem_relpos_branch_tokens_ctx(), "lvg-tiny-xy-stem-relpos-branch-tokens-ctx-match",
                      shape_match=6)


def lvg_tiny_xy_stem_relpos_branch_tokens_ctx_logits() -> ModelConfig:
    """lvg-tiny-xy-stem-relpos-branch-tokens-ctx with the branch's logits, as the lvg-s twin."""
    return _with_head(lvg_tiny_xy_stem_relpos_branch_tokens_ctx(), "lvg-tiny-xy-stem-relpos-branch-tokens-ctx-logits",
                      shape_branch_logits=True)


def lvg_tiny_xy_stem_relpos_branch_tokens_ctx_gated() -> ModelConfig:
    """lvg-tiny-xy-stem-relpos-branch-tokens-ctx-logits with the logits gated, as the lvg-s twin."""
    return _with_head(lvg_tiny_xy_stem_relpos_branch_tokens_ctx_logits(),
                      "lvg-tiny-xy-stem-relpos-branch-tokens-ctx-gated", shape_branch_logits_gate=True)


def lvg_tiny_p16() -> ModelConfig:
    """lvg-tiny on 16-pixel patches of a 320x320 input, as lvg-s-xy-stem-p16 is to lvg-s-xy-stem."""
    return _on_grid(lvg_tiny(), "lvg-tiny-p16", patch=16, size=320)


def lvg_tiny_xy_nolatent() -> ModelConfig:
    return lvg_tiny_xy().replace(name="lvg-tiny-xy-nolatent", latent=LatentConfig(enabled=False, lengths=(2, 3)))


def lvg_tiny_gres() -> ModelConfig:
    return lvg_tiny().replace(
        name="lvg-tiny-gres",
        latent=LatentConfig(lengths=(2, 3), num_concepts=7, subject_distributor=False),
        head=_tiny_head(gres=True),
    )


def _small(gres: bool, latent: bool, name: str, pixel_positions: bool = False) -> ModelConfig:
    return ModelConfig(
        name=name,
        encoder=EncoderConfig(
            patch_size=32, embed_dim=192, depth=6, num_heads=6, ffn_dim=768, vocab_size=1000, max_text_positions=64,
            init_std=0.02, position_init="sincos",
        ),
        latent=LatentConfig(enabled=latent, num_concepts=32, subject_distributor=not gres),
        head=HeadConfig(
            pyramid_layers=(2, 4, 5, 6), neck_dim=96, embed_dim=96, mlp_hidden=384, gres=gres, empty_heads=6,
            pixel_positions=pixel_positions,
        ),
        preprocess=PreprocessConfig(max_text_len=24, tokenizer="synthetic.spm"),
    )


def lvg_s() -> ModelConfig:
    """Small model for the bundled demo (trained on synthetic data): RIS/REC and GRES heads."""
    return _small(gres=True, latent=True, name="lvg-s")


def lvg_s_nolatent() -> ModelConfig:
    return _small(gres=True, latent=False, name="lvg-s-nolatent")


def lvg_s_xy() -> ModelConfig:
    """lvg-s whose F^V also knows where each pixel is (``HeadConfig.pixel_positions``)."""
    return _small(gres=True, latent=True, name="lvg-s-xy", pixel_positions=True)


def lvg_s_xy_vcinorm() -> ModelConfig:
    """lvg-s-xy whose concept injectors normalise their inputs (``LatentConfig.vci_norm``)."""
    base = lvg_s_xy()
    return base.replace(name="lvg-s-xy-vcinorm", latent=dataclasses.replace(base.latent, vci_norm=True))


def lvg_s_xy_vcinorm_gain() -> ModelConfig:
    """lvg-s-xy-vcinorm whose concept tokens carry a learned gain starting at 10 (``LatentConfig.concept_gain``)."""
    base = lvg_s_xy_vcinorm()
    return base.replace(name="lvg-s-xy-vcinorm-gain", latent=dataclasses.replace(base.latent, concept_gain=10.0))


def lvg_s_xy_stem() -> ModelConfig:
    """lvg-s-xy whose F^V also reads the image's pixels at 1/4 scale (``HeadConfig.image_stem``, 24 channels)."""
    base = lvg_s_xy()
    return base.replace(name="lvg-s-xy-stem", head=dataclasses.replace(base.head, image_stem=24))


def lvg_s_xy_stem_p16() -> ModelConfig:
    """lvg-s-xy-stem on 16-pixel patches of a 320x320 input: 400 patch tokens against 225, an 80x80 mask map
    against 120x120."""
    # Patch 16 at 480 (900 tokens) would cost ~4x the latency; at 320 it stays under the bundled model's 100 ms
    # (benchmarks/bench_capacity.py).
    return _on_grid(lvg_s_xy_stem(), "lvg-s-xy-stem-p16", patch=16, size=320)


def lvg_s_xy_stem_fine() -> ModelConfig:
    """lvg-s-xy-stem with its probability map at 1/2 scale (``HeadConfig.map_stride = 2``): 240x240 at 480, the
    stem drawing the edges at 2 input pixels instead of 4. The same weights as lvg-s-xy-stem."""
    return _with_head(lvg_s_xy_stem(), "lvg-s-xy-stem-fine", map_stride=2)


def lvg_s_xy_stem_refine() -> ModelConfig:
    """lvg-s-xy-stem-fine with an 8-channel mask refiner at 1/2 scale (``HeadConfig.mask_refine``)."""
    return _with_head(lvg_s_xy_stem_fine(), "lvg-s-xy-stem-refine", mask_refine=8)


def lvg_s_xy_stem_relpos() -> ModelConfig:
    """lvg-s-xy-stem-fine whose maps also read where a pixel lies among their candidates
    (``HeadConfig.candidate_positions``): two more weights per embedding dimension, starting at zero."""
    return _with_head(lvg_s_xy_stem_fine(), "lvg-s-xy-stem-relpos", candidate_positions=True)


def lvg_s_xy_stem_relpos_tokens() -> ModelConfig:
    """lvg-s-xy-stem-relpos whose patch tokens also read the stem's 1/2-scale features
    (``HeadConfig.stem_tokens``): four stride-2 convolutions up to 96 channels (0.24M parameters: the fp32
    file, 30.7 MB, stays under the 30 MiB budget) and a projection starting at zero."""
    return _with_head(lvg_s_xy_stem_relpos(), "lvg-s-xy-stem-relpos-tokens", stem_tokens=True, stem_tokens_width=96)


def lvg_s_xy_stem_relpos_branch() -> ModelConfig:
    """lvg-s-xy-stem-relpos with a shape branch (``HeadConfig.shape_branch``): five stride-2 convolutions from
    the image to the patch grid, 8 to 48 channels, and a projection into ``F^V`` starting at zero; 40k
    parameters, so the fp32 file stays under 30 MB."""
    return _with_head(lvg_s_xy_stem_relpos(), "lvg-s-xy-stem-relpos-branch", shape_branch=48)


def lvg_s_xy_stem_relpos_branch_tokens() -> ModelConfig:
    """lvg-s-xy-stem-relpos-branch whose branch also feeds the patch tokens (``HeadConfig.shape_branch_tokens``,
    a projection starting at zero; 9k parameters more)."""
    return _with_head(lvg_s_xy_stem_relpos_branch(), "lvg-s-xy-stem-relpos-branch-tokens", shape_branch_tokens=True)


def lvg_s_xy_stem_relpos_branch_tokens_ctx() -> ModelConfig:
    """lvg-s-xy-stem-relpos-branch-tokens with one context block in the shape branch
    (``HeadConfig.shape_branch_context``: a patch's shape features see 191 pixels instead of 63; 3.6k parameters
    more, starting as the identity)."""
    return _with_head(lvg_s_xy_stem_relpos_branch_tokens(), "lvg-s-xy-stem-relpos-branch-tokens-ctx",
                      shape_branch_context=1)


def lvg_s_xy_stem_relpos_branch_tokens_ctx_match() -> ModelConfig:
    """lvg-s-xy-stem-relpos-branch-tokens-ctx with the shape match (``HeadConfig.shape_match``: the sentence's
    shape word against each patch's shape; 1.8k parameters more, its gain starting at zero)."""
    return _with_head(lvg_s_xy_stem_relpos_branch_tokens_ctx(), "lvg-s-xy-stem-relpos-branch-tokens-ctx-match",
                      shape_match=6)


def lvg_s_xy_stem_relpos_branch_tokens_ctx_logits() -> ModelConfig:
    """lvg-s-xy-stem-relpos-branch-tokens-ctx whose expressions also weigh the branch's features directly
    (``HeadConfig.shape_branch_logits``: 4.7k parameters more, starting at zero)."""
    return _with_head(lvg_s_xy_stem_relpos_branch_tokens_ctx(), "lvg-s-xy-stem-relpos-branch-tokens-ctx-logits",
                      shape_branch_logits=True)


def lvg_s_xy_stem_relpos_branch_tokens_ctx_gated() -> ModelConfig:
    """lvg-s-xy-stem-relpos-branch-tokens-ctx-logits with the branch's logits gated by each map's own sigmoid
    (``HeadConfig.shape_branch_logits_gate``); the same tensors."""
    return _with_head(lvg_s_xy_stem_relpos_branch_tokens_ctx_logits(), "lvg-s-xy-stem-relpos-branch-tokens-ctx-gated",
                      shape_branch_logits_gate=True)


def lvg_s_xy_stem_tokens() -> ModelConfig:
    """lvg-s-xy-stem whose patch tokens also read the stem's features (``HeadConfig.stem_tokens``)."""
    return _with_head(lvg_s_xy_stem(), "lvg-s-xy-stem-tokens", stem_tokens=True)


def lvg_s_xy_stem_nolatent() -> ModelConfig:
    """lvg-s-xy-stem without latent expressions: its twin in the paper's Table 4."""
    return _without_latent(lvg_s_xy_stem(), "lvg-s-xy-stem-nolatent")


def lvg_s_xy_stem_relpos_nolatent() -> ModelConfig:
    """lvg-s-xy-stem-relpos without latent expressions: its twin in the paper's Table 4."""
    return _without_latent(lvg_s_xy_stem_relpos(), "lvg-s-xy-stem-relpos-nolatent")


def lvg_s_xy_stem_relpos_branch_tokens_nolatent() -> ModelConfig:
    """lvg-s-xy-stem-relpos-branch-tokens without latent expressions: its twin in the paper's Table 4."""
    return _without_latent(lvg_s_xy_stem_relpos_branch_tokens(), "lvg-s-xy-stem-relpos-branch-tokens-nolatent")


def lvg_s_xy_stem_relpos_branch_tokens_ctx_match_nolatent() -> ModelConfig:
    """lvg-s-xy-stem-relpos-branch-tokens-ctx-match without latent expressions: its twin in the paper's Table 4."""
    return _without_latent(lvg_s_xy_stem_relpos_branch_tokens_ctx_match(),
                           "lvg-s-xy-stem-relpos-branch-tokens-ctx-match-nolatent")


def lvg_s_xy_stem_fine_nolatent() -> ModelConfig:
    """lvg-s-xy-stem-fine without latent expressions: its twin in the paper's Table 4."""
    return _without_latent(lvg_s_xy_stem_fine(), "lvg-s-xy-stem-fine-nolatent")


def lvg_s_xy_nolatent() -> ModelConfig:
    """lvg-s-xy without latent expressions: its twin in the paper's Table 4."""
    return _small(gres=True, latent=False, name="lvg-s-xy-nolatent", pixel_positions=True)


_VARIANTS: dict[str, Callable[[], ModelConfig]] = {
    "lvg-b": lvg_b,
    "lvg-b-nolatent": lvg_b_nolatent,
    "lvg-b-gres": lvg_b_gres,
    "lvg-l": lvg_l,
    "lvg-l-gres": lvg_l_gres,
    "lvg-s": lvg_s,
    "lvg-s-nolatent": lvg_s_nolatent,
    "lvg-s-xy": lvg_s_xy,
    "lvg-s-xy-nolatent": lvg_s_xy_nolatent,
    "lvg-s-xy-stem": lvg_s_xy_stem,
    "lvg-s-xy-stem-fine": lvg_s_xy_stem_fine,
    "lvg-s-xy-stem-fine-nolatent": lvg_s_xy_stem_fine_nolatent,
    "lvg-s-xy-stem-nolatent": lvg_s_xy_stem_nolatent,
    "lvg-s-xy-stem-p16": lvg_s_xy_stem_p16,
    "lvg-s-xy-stem-refine": lvg_s_xy_stem_refine,
    "lvg-s-xy-stem-relpos": lvg_s_xy_stem_relpos,
    "lvg-s-xy-stem-relpos-nolatent": lvg_s_xy_stem_relpos_nolatent,
    "lvg-s-xy-stem-relpos-branch": lvg_s_xy_stem_relpos_branch,
    "lvg-s-xy-stem-relpos-branch-tokens": lvg_s_xy_stem_relpos_branch_tokens,
    "lvg-s-xy-stem-relpos-branch-tokens-ctx": lvg_s_xy_stem_relpos_branch_tokens_ctx,
    "lvg-s-xy-stem-relpos-branch-tokens-ctx-gated": lvg_s_xy_stem_relpos_branch_tokens_ctx_gated,
    "lvg-s-xy-stem-relpos-branch-tokens-ctx-logits": lvg_s_xy_stem_relpos_branch_tokens_ctx_logits,
    "lvg-s-xy-stem-relpos-branch-tokens-ctx-match": lvg_s_xy_stem_relpos_branch_tokens_ctx_match,
    "lvg-s-xy-stem-relpos-branch-tokens-ctx-match-nolatent": lvg_s_xy_stem_relpos_branch_tokens_ctx_match_nolatent,
    "lvg-s-xy-stem-relpos-branch-tokens-nolatent": lvg_s_xy_stem_relpos_branch_tokens_nolatent,
    "lvg-s-xy-stem-relpos-tokens": lvg_s_xy_stem_relpos_tokens,
    "lvg-s-xy-stem-tokens": lvg_s_xy_stem_tokens,
    "lvg-s-xy-vcinorm": lvg_s_xy_vcinorm,
    "lvg-s-xy-vcinorm-gain": lvg_s_xy_vcinorm_gain,
    "lvg-tiny": lvg_tiny,
    "lvg-tiny-nolatent": lvg_tiny_nolatent,
    "lvg-tiny-gres": lvg_tiny_gres,
    "lvg-tiny-p16": lvg_tiny_p16,
    "lvg-tiny-xy": lvg_tiny_xy,
    "lvg-tiny-xy-nolatent": lvg_tiny_xy_nolatent,
    "lvg-tiny-xy-stem": lvg_tiny_xy_stem,
    "lvg-tiny-xy-stem-fine": lvg_tiny_xy_stem_fine,
    "lvg-tiny-xy-stem-refine": lvg_tiny_xy_stem_refine,
    "lvg-tiny-xy-stem-relpos": lvg_tiny_xy_stem_relpos,
    "lvg-tiny-xy-stem-relpos-tokens": lvg_tiny_xy_stem_relpos_tokens,
    "lvg-tiny-xy-stem-relpos-branch": lvg_tiny_xy_stem_relpos_branch,
    "lvg-tiny-xy-stem-relpos-branch-tokens": lvg_tiny_xy_stem_relpos_branch_tokens,
    "lvg-tiny-xy-stem-relpos-branch-tokens-ctx": lvg_tiny_xy_stem_relpos_branch_tokens_ctx,
    "lvg-tiny-xy-stem-relpos-branch-tokens-ctx-gated": lvg_tiny_xy_stem_relpos_branch_tokens_ctx_gated,
    "lvg-tiny-xy-stem-relpos-branch-tokens-ctx-logits": lvg_tiny_xy_stem_relpos_branch_tokens_ctx_logits,
    "lvg-tiny-xy-stem-relpos-branch-tokens-ctx-match": lvg_tiny_xy_stem_relpos_branch_tokens_ctx_match,
    "lvg-tiny-xy-stem-tokens": lvg_tiny_xy_stem_tokens,
}


def list_variants() -> list[str]:
    """Names accepted by :func:`get_config`."""
    return list(_VARIANTS)


def unknown_variant(name: object) -> str:
    """The one-line message for a variant name that is not in :func:`list_variants`: the closest names, and
    where the full list is (with over thirty variants, listing them all made a line no one reads)."""
    # Whatever a caller passed (another type, a megabyte of text), the message stays one short line.
    if not isinstance(name, str):
        return f"unknown variant of type {type(name).__name__}; see `lvg info --list`"
    if len(name) > 64:
        return f"unknown variant {name[:64] + '...'!r}; see `lvg info --list`"
    close = difflib.get_close_matches(name, list(_VARIANTS), n=3, cutoff=0.6)
    guess = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return f"unknown variant {name!r}; {guess}see `lvg info --list`"


def get_config(name: str) -> ModelConfig:
    """The frozen config of a named variant, e.g. ``get_config("lvg-b")``."""
    try:
        return _VARIANTS[name]()
    except KeyError:
        raise ConfigError(unknown_variant(name)) from None
