"""The optimizer of a run: parameter groups (backbone vs new parts, decay vs not) and the lr schedule."""

from __future__ import annotations

import math

import pytest

from lvg.modeling import build_model
from lvg.train.optim import lr_factor, param_groups


def test_param_groups_split_backbone_and_no_decay() -> None:
    model = build_model("lvg-tiny-gres")
    groups = param_groups(model, lr=1e-4, backbone_mult=0.1, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    by_name = {g["name"]: g for g in groups}
    assert sorted(by_name) == ["backbone/decay", "backbone/no_decay", "new/decay", "new/no_decay"]
    assert by_name["backbone/decay"]["lr"] == pytest.approx(1e-5)
    assert by_name["new/decay"]["lr"] == pytest.approx(1e-4)
    seen = [names[id(p)] for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(names.values())  # every parameter exactly once
    no_decay = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    for expected in ("beit3.text_embed.weight", "beit3.encoder.embed_positions.A.weight",
                     "beit3.encoder.layers.0.self_attn.q_proj.A.bias", "concept_injectors.0.concepts",
                     "latent_init.class_tokens", "empty_head.empty_token", "pixel_decoder.fuse.1.weight"):
        assert expected in no_decay
    for expected in ("beit3.encoder.layers.0.self_attn.q_proj.A.weight", "text_head.fc1.weight"):
        assert expected not in no_decay
    assert all(names[id(p)].startswith("beit3.") for p in by_name["backbone/decay"]["params"])


def test_lr_schedule_warmup_then_cosine() -> None:
    total, warm = 10, 2
    assert lr_factor(0, total, warm, "cosine", 0.0) == pytest.approx(0.5)
    assert lr_factor(1, total, warm, "cosine", 0.0) == pytest.approx(1.0)
    assert lr_factor(2, total, warm, "cosine", 0.0) == pytest.approx(1.0)
    assert lr_factor(6, total, warm, "cosine", 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert lr_factor(9, total, warm, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert lr_factor(7, total, warm, "constant", 0.0) == 1.0
