"""The optimizer of a run: parameter groups (backbone vs new parts, decay vs not, scaled by prefix) and the lr
schedule."""

from __future__ import annotations

import math

import pytest
import torch

from lvg.errors import ConfigError
from lvg.modeling import build_model
from lvg.train.config import LrMult, TrainConfig
from lvg.train.optim import build_optimizer, lr_factor, param_groups
from tests.modeling.conftest import make_inputs


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


def test_lr_mults_scale_the_named_parameters_only_and_keep_the_new_parts_rate_last() -> None:
    model = build_model("lvg-tiny-xy-stem-relpos-branch")
    mults = (LrMult("shape_branch.to_map.", 10.0), LrMult("beit3.encoder.layers.0.", 0.5))
    groups = param_groups(model, lr=1e-4, backbone_mult=0.1, weight_decay=0.05, mults=mults)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = [names[id(p)] for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(names.values())  # every parameter exactly once
    rate = {names[id(p)]: g["lr"] for g in groups for p in g["params"]}
    for name in names.values():
        base = 1e-5 if name.startswith("beit3.") else 1e-4
        mult = next((m.mult for m in mults if name.startswith(m.prefix)), 1.0)
        assert rate[name] == pytest.approx(base * mult), name
    assert {"shape_branch.to_map.weight", "shape_branch.to_map.bias"} <= {n for n, r in rate.items() if r == 1e-3}
    assert groups[-1]["name"] == "new/no_decay"  # the rate a run logs stays the run's own
    plain = param_groups(model, lr=1e-4, backbone_mult=0.1, weight_decay=0.05)
    assert [g["name"] for g in plain] == ["backbone/decay", "backbone/no_decay", "new/decay", "new/no_decay"]


def test_lr_mults_move_a_zero_started_projection_mult_times_as_far_in_a_real_step() -> None:
    """Adam's first step moves each weight by about the rate: the scaled projection moves 10x as far as the
    same projection of a twin run without the mult, from the same weights and batch."""
    moved = []
    for mults in ((), (LrMult("shape_branch.to_map.", 10.0),)):
        torch.manual_seed(0)
        model = build_model("lvg-tiny-xy-stem-relpos-branch").train()
        cfg = TrainConfig(variant="lvg-tiny-xy-stem-relpos-branch", lr=1e-3, lr_mults=mults)
        opt = build_optimizer(model, cfg)
        out = model(*make_inputs(model.cfg, seed=1))
        out["logits"].float().pow(2).mean().backward()
        opt.step()
        moved.append(model.shape_branch.to_map.weight.detach().abs().amax().item())
    assert moved[0] > 0
    assert moved[1] == pytest.approx(10 * moved[0], rel=1e-3)


def test_lr_mults_refuse_a_prefix_that_names_nothing_and_overlapping_prefixes() -> None:
    model = build_model("lvg-tiny")
    with pytest.raises(ConfigError, match="names no trainable parameter"):
        param_groups(model, lr=1e-4, backbone_mult=0.1, weight_decay=0.0, mults=(LrMult("shape_branch.", 3.0),))
    with pytest.raises(ConfigError, match="overlap"):
        TrainConfig(lr_mults=(LrMult("shape_branch.", 2.0), LrMult("shape_branch.to_map.", 3.0)))
    with pytest.raises(ConfigError, match="must be > 0"):
        LrMult("text_head.", 0.0)


def test_lr_mults_read_from_a_toml_config(tmp_path) -> None:
    (tmp_path / "a.toml").write_text('lr_mults = [{ prefix = "shape_branch.to_", mult = 10.0 }]\n')
    cfg = TrainConfig.from_file(tmp_path / "a.toml")
    assert cfg.lr_mults == (LrMult("shape_branch.to_", 10.0),)
    assert TrainConfig.from_json(cfg.to_json()) == cfg  # what a checkpoint's header carries reads back equal
