"""Named training recipes (``lvg train --recipe NAME``): the paper's runs as TOML :class:`TrainConfig` files,
and what a run of one will cost (``lvg train --recipe NAME --dry-run``).

The files beside this module hold the paper's settings (Sec. 4.1, Appendix B.2), each with its source in a
comment. The paper leaves some settings out; these are decided here and marked so in the files:

- length: 40 epochs of one sentence per referred object (LAVT's schedule for RefCOCO-family RIS);
- schedule: 500 warmup steps, then cosine decay to 0; AdamW weight decay 0.01; the backbone at 0.1x the lr;
- numerics: bf16 autocast; gradient clipping at norm 1; contrastive temperature 0.1 (SPEC 3.6);
- batch: the paper's 64 per step on four GPUs is ``global_batch = 64`` with ``micro_batch = 16``: on one GPU
  four accumulated passes of 16, on eight GPUs 8 each, the step always over 64 samples.

Cost estimates are arithmetic, stated with their assumptions: training FLOPs = 3 x the forward FLOPs of
:func:`lvg.modeling.cost.count_flops` per sample (forward + backward), at an assumed sustained rate per GPU;
memory per GPU = weights, gradients and AdamW moments (16 bytes per parameter) + activations of one
micro-batch (Korthikanti et al. 2022, no recomputation: ``s h (34 + 5 a s / h)`` bytes per layer and sample
in 16-bit, ``s`` tokens, ``h`` width, ``a`` heads).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lvg.config import get_config
from lvg.errors import ConfigError
from lvg.train.config import TrainConfig

__all__ = ["ASSUMED_TFLOPS", "PUBLISHED_TRAIN_REFS", "RECIPES", "Plan", "load_recipe", "plan", "recipe_path"]

RECIPES = ("refcoco-unc", "refcoco+-unc", "refcocog-umd", "grefcoco", "combined")
#: Sustained training throughput assumed per GPU, TFLOP/s: about a third of an A100's 312 bf16 dense peak
#: (and two thirds of the A6000's 155 that the paper used). A measured rate replaces it with ``tflops=``.
ASSUMED_TFLOPS = 100.0
#: Referred objects in the train split (lichengunc/refer's statistics), for a plan before the data is fetched.
PUBLISHED_TRAIN_REFS = {("refcoco", "unc"): 42404, ("refcoco+", "unc"): 42278, ("refcocog", "umd"): 42226}


def recipe_path(name: str) -> Path:
    """The TOML file of recipe ``name``."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return Path(__file__).with_name(f"{name}.toml")


def load_recipe(name: str) -> TrainConfig:
    """The :class:`TrainConfig` of recipe ``name``."""
    return TrainConfig.from_file(recipe_path(name))


@dataclass(frozen=True)
class Plan:
    """What a run will do and cost (see the module docstring for the arithmetic)."""

    world_size: int
    per_process_batch: int
    micro_batch: int
    accumulation: int
    train_samples: int | None
    steps_per_epoch: int | None
    total_steps: int | None
    forward_gflops: float
    params: int
    assumed_tflops: float
    gpu_hours: float | None
    memory_gb_per_gpu: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _memory_gb(variant: str, params: int, micro: int) -> float:
    cfg = get_config(variant)
    s, h, a, layers = cfg.num_tokens, cfg.encoder.embed_dim, cfg.encoder.num_heads, cfg.encoder.depth
    activations = layers * s * h * (34 + 5 * a * s / h) * micro
    return (16 * params + activations) / 1e9


def plan(cfg: TrainConfig, train_samples: int | None, *, world_size: int = 1,
         tflops: float = ASSUMED_TFLOPS) -> Plan:
    """The plan of ``cfg`` on ``world_size`` GPUs over ``train_samples`` training samples (None: unknown)."""
    from lvg.modeling.cost import count_flops

    run = cfg.for_world(world_size)
    report = count_flops(run.variant)
    micro = min(run.micro_batch or run.batch_size, run.batch_size)
    steps_per_epoch = total = hours = None
    if train_samples is not None:
        steps_per_epoch = train_samples // (run.batch_size * world_size)
        total = run.steps if run.steps > 0 else run.epochs * steps_per_epoch
        flops = 3 * report.flops["total"] * total * run.batch_size * world_size
        hours = flops / (tflops * 1e12) / 3600
    return Plan(world_size=world_size, per_process_batch=run.batch_size, micro_batch=micro,
                accumulation=run.accumulation(), train_samples=train_samples, steps_per_epoch=steps_per_epoch,
                total_steps=total, forward_gflops=round(report.total_gflops, 2), params=report.total_params,
                assumed_tflops=tflops, gpu_hours=None if hours is None else round(hours, 1),
                memory_gb_per_gpu=round(_memory_gb(run.variant, report.total_params, micro), 1))
