"""``lvg train`` and ``lvg eval``.

torch is imported inside the command bodies only, so ``lvg --help`` works without it.

Examples::

    lvg train --variant lvg-tiny --data data/refcoco-synth --out runs/tiny --steps 500
    lvg train --out runs/b --resume
    torchrun --nproc_per_node 4 -m lvg.cli train --config train.toml --out runs/b
    lvg eval --ckpt runs/tiny/best.safetensors --data data/refcoco-synth --split val --json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lvg.cli._common import PRECISION_HELP, echo_json, handle_errors, messages_as_lines
from lvg.errors import require


def _train_config(config: Path | None, overrides: dict[str, Any], resume_from: Path | None = None,
                  recipe: str | None = None) -> Any:
    """``config`` or ``recipe`` (else, when resuming, the run's own settings from its checkpoint, else the
    defaults) with the flags that were given applied on top."""
    from lvg.errors import ConfigError
    from lvg.train.config import TrainConfig

    if config is not None and recipe is not None:
        raise ConfigError("give --config or --recipe, not both")
    if overrides.get("batch_size") is not None:
        overrides = {**overrides, "global_batch": 0}  # an explicit per-process batch replaces a global one
    if recipe is not None:
        from lvg.train.recipes import load_recipe

        base = load_recipe(recipe)
    elif config is not None:
        base = TrainConfig.from_file(config)
    else:
        from lvg.train.state import run_config

        base = (run_config(resume_from) if resume_from is not None else None) or TrainConfig()
    changes = {k: v for k, v in overrides.items() if v is not None}
    return base.replace(**changes) if changes else base


@handle_errors
def train_command(
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory (checkpoints, log.jsonl)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="TrainConfig file (.json or .toml)."),
    recipe: str | None = typer.Option(
        None, "--recipe", help="The paper's settings for a dataset: refcoco-unc, refcoco+-unc, refcocog-umd, "
        "grefcoco, combined."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the resolved config, the data, the step count and the estimated cost; "
        "train nothing, fetch nothing."),
    gpus: int | None = typer.Option(None, "--gpus", min=1, help="GPUs the dry run plans for (default: "
                                    "$WORLD_SIZE, else 1)."),
    micro_batch: int | None = typer.Option(
        None, "--micro-batch", min=0, help="Most samples per forward pass; larger batches accumulate gradients."),
    variant: str | None = typer.Option(None, help="Model variant, e.g. lvg-b, lvg-tiny."),
    data: str | None = typer.Option(
        None, help="Dataset spec (REFER / gREFER directory, or a name fetched into the cache: refcoco:unc, "
        "refcoco+:unc, refcocog:umd, grefcoco:unc)."),
    steps: int | None = typer.Option(None, help="Optimizer steps (overrides epochs)."),
    epochs: int | None = typer.Option(None, help="Epochs, when --steps is 0."),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b", help="Batch size per process."),
    lr: float | None = typer.Option(None, help="Peak learning rate of the new parts."),
    eval_every: int | None = typer.Option(None, help="Evaluate every N steps (0: only at the end)."),
    eval_text_swap: bool | None = typer.Option(
        None, "--eval-text-swap/--no-eval-text-swap",
        help="Add the text-swap control (lvg eval --text-swap) to every evaluation."),
    final_eval: bool | None = typer.Option(
        None, "--final-eval/--no-final-eval",
        help="Score the whole validation split after the last step (default on; off for one step of a recipe)."),
    save_every: int | None = typer.Option(None, help="Checkpoint every N steps."),
    log_every: int | None = typer.Option(None, help="Log every N steps."),
    seed: int | None = typer.Option(None, help="Random seed."),
    amp: str | None = typer.Option(None, help="Mixed precision: off | bf16 (CPU or CUDA) | fp16 (CUDA)."),
    threads: int | None = typer.Option(None, min=0, help="Intra-op threads of this process (0: PyTorch's default)."),
    stage: str | None = typer.Option(None, help="ground (the paper's training) | pretrain (the encoder alone)."),
    sentences_per_image: int | None = typer.Option(
        None, "--sentences-per-image", min=1, help="Sentences per image in a batch (must divide --batch-size)."),
    contrastive: str | None = typer.Option(None, help="pos_margin | infonce | triplet | arcface."),
    pretrained: str | None = typer.Option(
        None, help="Official BEiT-3 .pth for the backbone, or beit3-base / beit3-large (fetched into the cache)."),
    init: str | None = typer.Option(
        None, "--init", help="Start from this Latent-VG checkpoint's weights (same variant; new optimizer and "
        "schedule)."),
    init_parts: str | None = typer.Option(
        None, "--init-parts", help="all | backbone | shared | grow | common | resample: what --init loads "
        "(backbone: the encoder only, from any variant of the same encoder, e.g. a pretraining run; shared: "
        "every tensor this variant has, e.g. a latent-off twin from a latent-on run; grow: every tensor of the "
        "file, the variant's additions start at their initialisation, e.g. lvg-s-xy from an lvg-s run; "
        "common: both at once, e.g. lvg-s-xy-nolatent from an lvg-s run; resample: the same modules at another "
        "patch or input size, e.g. lvg-s-xy-stem-p16 from an lvg-s-xy-stem run)."),
    tokenizer: str | None = typer.Option(
        None, help="Sentencepiece file (default: the --init checkpoint's own, else the one beside the data)."),
    val_split: str | None = typer.Option(None, help="Validation split ('' disables evaluation)."),
    num_workers: int | None = typer.Option(None, help="DataLoader worker processes."),
    device: str | None = typer.Option(None, help="cpu | cuda | cuda:N (default: CUDA if available)."),
    resume: bool = typer.Option(
        False, "--resume",
        help="Continue the run in --out from its last checkpoint, with its own settings unless --config or "
        "flags change them."),
    stop_at: int | None = typer.Option(
        None, "--stop-at", min=1,
        help="Checkpoint and exit 0 after this step, as a signal would; the schedule still plans --steps."),
    json_out: bool = typer.Option(False, "--json", help="Print the final result as JSON."),
) -> None:
    """Train a model; checkpoints go to OUT/last.safetensors (SIGINT/SIGTERM: checkpoint and exit 0)."""
    from lvg.errors import ConfigError

    require("torch", extra="train", purpose="training")
    require("safetensors", extra="train", purpose="training")
    cfg = _train_config(config, {
        "variant": variant, "data": data, "steps": steps, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "eval_every": eval_every, "eval_text_swap": eval_text_swap, "final_eval": final_eval,
        "save_every": save_every,
        "log_every": log_every, "seed": seed, "amp": amp, "threads": threads, "stage": stage,
        "sentences_per_image": sentences_per_image, "init_parts": init_parts,
        "contrastive": contrastive, "pretrained": pretrained, "init_from": init, "tokenizer": tokenizer,
        "num_workers": num_workers, "micro_batch": micro_batch,
    }, resume_from=out if resume else None, recipe=recipe)
    if val_split is not None:
        cfg = cfg.replace(val_split=val_split or None)
    if dry_run:
        from lvg.cli._dry_run import print_plan

        print_plan(cfg, gpus=gpus, json_out=json_out)
        return
    if out is None:
        raise ConfigError("--out is required to train (only --dry-run goes without)")
    cfg = _resolve_names(cfg)
    from lvg.train.trainer import train

    with messages_as_lines():
        result = train(cfg, out, resume=resume, device=device, stop_at_step=stop_at)
    _report(result, json_out)


def _report(result: Any, json_out: bool) -> None:
    """Print how a run ended (a ``TrainResult``): one JSON object, or a line and the final metrics."""
    summary = {
        "out": str(result.out_dir), "step": result.step, "total_steps": result.total_steps,
        "stopped": result.stopped, "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "metrics": result.metrics,
    }
    if json_out:
        echo_json(summary)
    else:
        state = "stopped" if result.stopped else "finished"
        typer.echo(f"{state} at step {result.step}/{result.total_steps}; checkpoint: {summary['checkpoint']}")
        if result.metrics:
            typer.echo(format_metrics(result.metrics))


@handle_errors
def eval_command(
    ckpt: Path | None = typer.Option(
        None, "--ckpt", help="Checkpoint (.safetensors) or exported model (.onnx, .engine/.plan); default: the "
        "bundled model."),
    data: str = typer.Option(..., help="Dataset spec (REFER / gREFER directory)."),
    split: str = typer.Option("val", help="Split to evaluate."),
    task: str | None = typer.Option(None, help="ris | rec | gres (default: gres for GRES variants, else ris)."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", min=1, help="Sentences per forward pass."),
    tokenizer: str | None = typer.Option(
        None, help="Sentencepiece file (default: the checkpoint's own, else the one beside the data)."),
    max_sentences: int = typer.Option(0, min=0, help="Evaluate an evenly spread subset (0: all)."),
    device: str | None = typer.Option(
        None, help="cpu | cuda | cuda:N, or tensorrt for an .onnx model (default: CUDA if available)."),
    precision: str = typer.Option(
        "auto", "--precision", help=PRECISION_HELP),
    text_swap: bool = typer.Option(
        False, "--text-swap", help="Also score each image with another image's sentence (does the model read text?)."
    ),
    threshold: float | None = typer.Option(
        None, help="Mask threshold in [0, 1) (default: the model's, as lvg infer uses)."),
    json_out: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Evaluate a checkpoint or an exported model on every sentence of a split, at original image resolution."""
    from lvg.core.postprocess import check_mask_threshold
    from lvg.errors import ConfigError

    if task is not None and task not in ("ris", "rec", "gres"):
        raise ConfigError(f"--task must be ris, rec or gres, got {task!r}")
    if threshold is not None:
        check_mask_threshold(threshold)  # before minutes of loading, not after
    require("torch", extra="train", purpose="evaluation")
    require("safetensors", extra="train", purpose="evaluation")

    from lvg.core.artifact import in_own_folder
    from lvg.core.model_file import ModelFile
    from lvg.runtime.backends import open_backend
    from lvg.runtime.grounder import Grounder, default_model_path
    from lvg.train.data import open_dataset
    from lvg.train.evaluate import evaluate
    from lvg.train.run_data import find_tokenizer, tokenizer_for_checkpoint

    with messages_as_lines():
        from lvg.hub import resolve_data

        data = resolve_data(data)  # a name (refcoco:unc) is read from the cache, fetched first if missing
        model_file = ModelFile.open(default_model_path() if ckpt is None else ckpt)
        cfg = model_file.config
        # An exported model runs as lvg infer runs it and reads text with its own tokenizer; a checkpoint
        # runs on the torch backend (which also gives each expression's map) with the tokenizer its run used.
        grounder = None if model_file.kind == "torch" else Grounder.load(model_file, device=device or "auto",
                                                                         tokenizer=tokenizer, precision=precision)
        backend = grounder.backend if grounder else open_backend(model_file, device=device or "auto",
                                                                 precision=precision)
        # The dataset first: a wrong --data is the error to report, not the tokenizer missing beside it. The
        # task picks the layout of a dataset that has both (a synthetic one): GRES reads the gREFER refs, RIS and
        # REC the REFER ones; without a task, the model's head decides.
        source = open_dataset(data, split=split, prefer_gres=task == "gres" or (task is None and cfg.head.gres))
        if task == "rec":
            source = _with_targets(source)
        if grounder is None and tokenizer is None and model_file.info.tokenizer_bytes is None:
            # The tokenizer the config names is looked up in the data folder: it must really be there.
            in_own_folder(find_tokenizer(data, cfg.preprocess.tokenizer), "tokenizer")
        tok = grounder.tokenizer if grounder else tokenizer_for_checkpoint(model_file, data, cfg, tokenizer)
        metrics = evaluate(backend, source, split, tok, task=task, batch_size=batch_size,
                           max_sentences=max_sentences, text_swap=text_swap, mask_threshold=threshold,
                           show_progress=None)
    if json_out:
        echo_json({"checkpoint": str(model_file.path), "variant": cfg.name, "backend": backend.name,
                   "precision": backend.precision, **metrics})
    else:
        typer.echo(f"{cfg.name} on {backend.name} ({backend.precision})")
        typer.echo(format_metrics(metrics))


def _resolve_names(cfg: Any) -> Any:
    """``pretrained`` and ``data`` given as names (``beit3-base``, ``refcoco:unc``) as files in the cache,
    fetched first when missing (every process of a torchrun job asks; one downloads, the others wait)."""
    from lvg.config import get_config
    from lvg.hub import resolve_data, resolve_pretrained

    changes = {}
    if cfg.pretrained:
        changes["pretrained"] = resolve_pretrained(cfg.pretrained)
    if cfg.data:
        tokenizer = None if cfg.tokenizer else get_config(cfg.variant).preprocess.tokenizer
        changes["data"] = resolve_data(cfg.data, tokenizer=tokenizer)
    changes = {k: v for k, v in changes.items() if v != getattr(cfg, k)}
    return cfg.replace(**changes) if changes else cfg


def _with_targets(source: Any) -> Any:
    """``source`` without its no-target refs, with a warning naming how many were left out: REC scores a box
    against the ground-truth box, which a no-target ref does not have."""
    import warnings

    kept = source.with_targets()
    left = len(source.samples) - len(kept.samples)
    if left:
        warnings.warn(f"REC is scored on the {len(kept.samples)} refs that have a target; {left} refs with no target "
                      f"({source.num_sentences() - kept.num_sentences()} sentences) are left out", UserWarning,
                      stacklevel=2)
    return kept


def format_metrics(metrics: dict[str, Any]) -> str:
    """The metrics of :func:`lvg.train.evaluate.evaluate` as text: fractions as percentages, ``n/a`` where a
    metric is undefined, the threshold as given."""
    lines = []
    for key, value in metrics.items():
        if key == "text_swap":
            lines.append(f"  with another image's sentence ({value['n']}): "
                         + _metric_list({k: v for k, v in value.items() if k != "n"}))
        elif key == "per_expression":
            for name, vals in value.items():
                lines.append(f"  {name}: " + _metric_list(vals))
        elif key == "mask_threshold":  # a setting, not a metric: printed as given
            lines.append(f"{key}: {value:g}")
        elif value is None or isinstance(value, float):  # None: undefined here (N-acc without no-target samples)
            lines.append(f"{key}: {_pct(value)}")
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


def _metric_list(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {_pct(v)}" for k, v in values.items())


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``eval`` to ``app``."""
    app.command("train")(train_command)
    app.command("eval")(eval_command)
