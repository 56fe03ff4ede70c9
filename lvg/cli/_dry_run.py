"""``lvg train --dry-run``: what a run would read, how long it is, and what it would cost; nothing is trained
or fetched."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from lvg.cli._common import echo_json
from lvg.train.config import data_parts


def _data_rows(cfg: Any) -> tuple[list[dict[str, Any]], str | None]:
    """One row per dataset of ``cfg.data`` (and the images and tokenizer it needs), and the spec the run will
    read where every part of it is readable now (None otherwise)."""
    from lvg.config import get_config
    from lvg.hub import cached_path, data_needs, is_cached

    def item_row(spec: str, item: Any) -> dict[str, Any]:
        return {"spec": spec, "item": item.name, "path": str(cached_path(item)), "cached": is_cached(item),
                "approx_bytes": item.size}

    tokenizer = None if cfg.tokenizer else get_config(cfg.variant).preprocess.tokenizer
    rows, extra, readable = [], [], True
    for part in data_parts(cfg.data) if cfg.data else [cfg.data]:
        _, items = data_needs(part, tokenizer=tokenizer) if part else (part, [])
        if not items:
            rows.append({"spec": part, "path": part, "cached": Path(part.split(":")[0]).exists()})
            continue
        rows.append(item_row(part, items[0]))  # the dataset's annotations, under the name it was given
        readable &= rows[-1]["cached"]
        extra += [i for i in items[1:] if i not in extra]
    rows += [item_row(i.name, i) for i in extra]
    return rows, data_needs(cfg.data, tokenizer=tokenizer)[0] if readable and cfg.data else None


def _train_samples(cfg: Any, spec: str | None) -> tuple[int | None, str]:
    """Training samples of the run and where the number comes from."""
    from lvg.config import get_config
    from lvg.hub import named_data
    from lvg.train.recipes import PUBLISHED_TRAIN_REFS

    if spec is not None:
        from lvg.train.data import open_dataset

        source = open_dataset(spec, split=cfg.train_split, prefer_gres=get_config(cfg.variant).head.gres)
        return len(source), f"counted in {spec}"
    named = named_data(cfg.data) if len(data_parts(cfg.data)) == 1 else None
    if named is not None and (named[0].dataset, named[1]) in PUBLISHED_TRAIN_REFS:
        return PUBLISHED_TRAIN_REFS[(named[0].dataset, named[1])], "published count; the data is not fetched yet"
    return None, "unknown until the data is fetched"


def print_plan(cfg: Any, *, gpus: int | None, json_out: bool) -> None:
    """Print the resolved config, data, pretrained weights, step count and the estimated cost of ``cfg``."""
    from lvg.hub import get_item, is_cached
    from lvg.train.recipes import plan

    world = gpus or int(os.environ.get("WORLD_SIZE", "1") or 1)
    run = cfg.for_world(world)
    rows, spec = _data_rows(cfg)
    samples, origin = _train_samples(cfg, spec)
    p = plan(cfg, samples, world_size=world)
    weights = None
    if cfg.pretrained:
        try:
            item = get_item(cfg.pretrained)
            weights = {"spec": cfg.pretrained, "file": item.file, "cached": is_cached(item), "approx_bytes": item.size}
        except Exception:  # a path
            weights = {"spec": cfg.pretrained, "file": cfg.pretrained, "cached": Path(cfg.pretrained).exists()}
    if json_out:
        echo_json({"config": run.to_dict(), "data": rows, "pretrained": weights, "samples_from": origin,
                   "plan": p.to_dict()})
        return
    typer.echo(f"config (resolved for {world} GPU{'s' if world > 1 else ''}):")
    for key, value in run.to_dict().items():
        typer.echo(f"  {key} = {value!r}")
    typer.echo("data:")
    for r in rows:
        size = f", ~{r['approx_bytes'] / 1e9:.2f} GB" if "approx_bytes" in r else ""
        typer.echo(f"  {r['spec']} -> {r['path']} ({'cached' if r['cached'] else 'to fetch' + size})")
    if weights:
        state = "cached" if weights["cached"] else "to fetch" if "approx_bytes" in weights else "missing"
        typer.echo(f"pretrained: {weights['spec']} -> {weights['file']} ({state})")
    if p.total_steps is None:
        typer.echo(f"steps: {origin}")
    else:
        length = f"{run.steps} steps" if run.steps else f"{p.steps_per_epoch} per epoch x {run.epochs} epochs"
        typer.echo(f"steps: {p.total_steps} ({length}; {samples} training samples, {origin})")
    typer.echo(f"batch: {p.per_process_batch * world} per step = {world} GPU(s) x {p.per_process_batch}, "
               f"{p.accumulation} forward pass(es) of at most {p.micro_batch} per step")
    hours = "unknown" if p.gpu_hours is None else f"about {p.gpu_hours} GPU-hours"
    typer.echo(f"cost: {hours} (training = 3 x {p.forward_gflops} GFLOPs forward per sample, at an assumed "
               f"{p.assumed_tflops:g} TFLOP/s sustained per GPU)")
    typer.echo(f"memory: about {p.memory_gb_per_gpu} GB per GPU (16 bytes per parameter for {p.params / 1e6:.0f}M "
               f"parameters + activations of {p.micro_batch} samples; an estimate)")
