"""The shape match on a tiny variant: grown from a model without it, it starts with that model's function; its
term is the log-probability that each patch's shape is the sentence's shape word, the same on every map; the
word is read from the sentence's own tokens only."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lvg.config import get_config
from lvg.errors import ConfigError
from lvg.modeling.shape_match import EPS, GAIN_SCALE
from tests.modeling.conftest import grow_unchanged

BASE, MATCH = "lvg-tiny-xy-stem-relpos-branch-tokens-ctx", "lvg-tiny-xy-stem-relpos-branch-tokens-ctx-match"


def test_the_shape_match_grows_a_model_without_changing_it_then_learns_its_gain():
    old, model, inputs = grow_unchanged(BASE, MATCH, "shape_match.", seed=3)
    model.train()
    model(*inputs)["prob"].mean().backward()
    match = model.shape_match
    assert match.gain.grad is not None and match.gain.grad.abs() > 0  # the gain learns at once
    # The classifiers behind it learn from their own losses, not through a zero gain.
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in (match.word.weight, match.patch.weight))


def test_the_term_is_the_log_probability_that_a_patchs_shape_is_the_named_one():
    old, model, inputs = grow_unchanged(BASE, MATCH, "shape_match.", seed=4)
    match = model.shape_match
    with torch.no_grad():
        match.gain.fill_(0.2)
        match.word.weight.normal_(std=1.0)
        out, without = model(*inputs), old(*inputs)
    q = out["shape_word_logits"].softmax(-1)  # (B, 1 + S)
    p = out["patch_shape_logits"].softmax(-1)  # (B, n, S)
    b, n, s = p.shape
    g = model.cfg.encoder.grid
    want = torch.empty(b, n)
    for i in range(b):
        for k in range(n):
            want[i, k] = q[i, 0] + sum(q[i, 1 + c] * p[i, k, c] for c in range(s))
    term = torch.nn.functional.interpolate(torch.log(want + EPS).reshape(b, 1, g, g), size=out["logits"].shape[-2:],
                                           mode="bilinear", align_corners=False) * GAIN_SCALE * 0.2
    diff = out["logits"] - without["logits"]  # (B, 1+N, h, w): the candidate positions start at zero
    assert term.abs().amax() > 0.1
    for j in range(diff.shape[1]):  # every expression's map gets the same term
        torch.testing.assert_close(diff[:, j:j + 1], term, rtol=1e-4, atol=1e-4)


def test_the_shape_word_is_read_from_the_sentences_words_alone():
    torch.manual_seed(5)
    from lvg.modeling import build_model
    from tests.modeling.conftest import make_inputs

    model = build_model(MATCH).eval()
    image, ids, mask = make_inputs(model.cfg, batch=2)
    mask = mask.clone()
    mask[:, 4:] = False  # short sentences: the tail is padding
    with torch.no_grad():
        words = model.beit3.embed(image, ids)[1]
        base = model.shape_match.word_logits(words, mask)
        changed = words.clone()
        changed[:, 0] += 5.0  # the class token
        changed[:, 4:] += 5.0  # the padding
        same = model.shape_match.word_logits(changed, mask)
        other = words.clone()
        other[:, 2] += 5.0  # a word
        moved = model.shape_match.word_logits(other, mask)
        empty = model.shape_match.word_logits(words, torch.zeros_like(mask))
    torch.testing.assert_close(same, base)
    assert (moved - base).abs().amax() > 1e-3
    assert torch.isfinite(empty).all() and not empty.any()  # no word at all: even odds, not NaN


def test_a_shape_match_without_a_branch_is_a_config_error():
    cfg = get_config("lvg-tiny-xy-stem-relpos")
    with pytest.raises(ConfigError, match="head.shape_match"):
        cfg.replace(head=dataclasses.replace(cfg.head, shape_match=6))
