"""The optimizer of a run: AdamW over parameter groups, and the learning-rate schedule (a pure function of
the step, so a resumed run follows the same curve)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from lvg.train.config import TrainConfig

__all__ = ["BACKBONE_PREFIX", "NO_DECAY_NAMES", "build_optimizer", "lr_factor", "param_groups", "set_lr"]

#: Parameters trained without weight decay besides every 0-/1-D tensor (norms, biases): embeddings and
#: learned tokens, whose scale is meaningful.
NO_DECAY_NAMES = ("text_embed", "cls_token", "embed_positions", "class_tokens", "concepts", "empty_token")
BACKBONE_PREFIX = "beit3."


def param_groups(model: nn.Module, lr: float, backbone_mult: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: backbone (``beit3.*``, ``lr * backbone_mult``) vs new parts (``lr``), each split into
    decayed and non-decayed (norms, biases, embeddings, learned tokens) parameters.

    Every group carries ``base_lr`` (its peak learning rate) and ``name``; the order of parameters is the
    order of ``named_parameters`` so optimizer state indices are stable across runs.
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        backbone = name.startswith(BACKBONE_PREFIX)
        decay = p.ndim >= 2 and not any(key in name for key in NO_DECAY_NAMES)
        groups.setdefault((backbone, decay), []).append(p)
    out = []
    for (backbone, decay), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], not kv[0][1])):
        base = lr * backbone_mult if backbone else lr
        out.append({
            "params": params,
            "lr": base,
            "base_lr": base,
            "weight_decay": weight_decay if decay else 0.0,
            "name": f"{'backbone' if backbone else 'new'}/{'decay' if decay else 'no_decay'}",
        })
    return out


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak lr for optimizer step ``step`` (0-based) of ``total``.

    Linear warmup ``(step + 1) / warmup`` for ``step < warmup``; then cosine from 1 (first step after the
    warmup) towards ``min_ratio`` (reached one step after the last), or constant 1.
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, cfg: TrainConfig, extra: nn.Module | None = None) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` at the run's peak learning rate (the paper's default when unset).

    ``extra``: modules trained beside the model (the pretraining heads), as new parts at ``lr``; their groups
    come after the model's, so the model's optimizer state keeps its indices."""
    lr = cfg.resolved_lr(model.cfg.head.gres)  # type: ignore[union-attr]
    groups = param_groups(model, lr, cfg.backbone_lr_mult, cfg.weight_decay)
    if extra is not None:
        own = {id(p) for g in groups for p in g["params"]}
        for group in param_groups(extra, lr, 1.0, cfg.weight_decay):
            group["params"] = [p for p in group["params"] if id(p) not in own]  # the shared encoder once
            if group["params"]:
                groups.append({**group, "name": f"extra/{group['name']}"})
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)


def set_lr(opt: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's learning rate to ``factor`` times its peak (``base_lr``)."""
    for group in opt.param_groups:
        group["lr"] = group["base_lr"] * factor
