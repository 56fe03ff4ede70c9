"""``lvg data synth`` and ``lvg data stats``: generate the synthetic dataset, summarise datasets (no torch).

Examples::

    lvg data synth --out data/synth --images 1000 --seed 0
    lvg data stats data/synth --split val
    lvg data stats data:refcocog:umd --split val --json
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from lvg._progress import progress
from lvg.cli._common import echo_json, handle_errors
from lvg.train.synth import MIN_VOCAB_SIZE

data_app = typer.Typer(
    name="data",
    help="Datasets: generate the synthetic referring dataset, summarise REFER / gREFER datasets.",
    no_args_is_help=True,
    add_completion=False,
)


@data_app.command("synth")
@handle_errors
def synth(
    out: Path = typer.Option(..., "--out", help="Output directory (created)."),
    images: int = typer.Option(1000, "--images", min=1, help="Number of images."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the output is a function of the arguments."),
    vocab_size: int = typer.Option(400, "--vocab-size", min=MIN_VOCAB_SIZE,
                                   help="Upper bound of the sentencepiece vocabulary."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", min=0.0, max=1.0,
                                       help="Fraction of images in the 'val' split (the rest is 'train')."),
    min_size: int = typer.Option(320, "--min-size", min=64, help="Smallest image side in pixels."),
    max_size: int = typer.Option(640, "--max-size", min=64, help="Largest image side in pixels."),
    image_format: str = typer.Option("jpg", "--format", help="Image format: jpg or png."),
    workers: int | None = typer.Option(None, "--workers", min=1,
                                          help="Rendering processes (default: CPU count, at most 8)."),
    no_target_forms: str = typer.Option(
        "plain", "--no-target-forms",
        help="How no-target expressions are worded: plain (always 'the <colour> <shape>', which a model can "
             "learn as 'nothing') or varied (the noun phrases and positions of target expressions too)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty output directory."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Generate a synthetic referring dataset in the REFER and gREFER layouts (plus a tokenizer)."""
    from lvg.errors import InputError
    from lvg.train.synth import generate
    from lvg.train.synth.language import NO_TARGET_FORMS

    if out.exists() and not out.is_dir():
        raise InputError(f"--out exists and is not a directory: {out}")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(f"--out {out} is not empty (pass --force to write into it)")
    if max_size < min_size:
        raise InputError(f"--max-size {max_size} is smaller than --min-size {min_size}")
    if image_format not in ("jpg", "png"):
        raise InputError(f"--format must be jpg or png, got {image_format!r}")
    if no_target_forms not in NO_TARGET_FORMS:
        raise InputError(f"--no-target-forms must be {' or '.join(NO_TARGET_FORMS)}, got {no_target_forms!r}")
    splits = (("train", 1.0 - val_fraction), ("val", val_fraction)) if val_fraction > 0 else "train"
    n_workers = workers if workers is not None else max(1, min(8, os.cpu_count() or 1))
    with progress(total=images, desc="synth") as bar:
        summary = generate(
            out,
            images=images,
            seed=seed,
            size_range=(min_size, max_size),
            vocab_size=vocab_size,
            splits=splits,
            image_format=image_format,  # type: ignore[arg-type]
            workers=n_workers,
            progress=bar.update,
            no_target_forms=no_target_forms,  # type: ignore[arg-type]
        )
    if json_out:
        echo_json(summary.to_dict())
        return
    typer.echo(
        f"wrote {summary.images} images to {summary.out_dir} "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(summary.splits.items()))})\n"
        f"  refcoco-synth:  {summary.refs} refs, {summary.ref_sentences} sentences\n"
        f"  grefcoco-synth: {summary.grefs} refs, {summary.gref_sentences} sentences "
        f"({summary.multi_target_refs} multi-target, {summary.no_target_refs} no-target)\n"
        f"  tokenizer: {summary.tokenizer}"
    )


@data_app.command("stats")
@handle_errors
def stats(
    dataset: str = typer.Argument(..., help="DIR (synthetic), DIR:DATASET or DIR:DATASET:SPLITBY."),
    split: str | None = typer.Option(None, "--split", help="One split (default: all)."),
    gres: bool = typer.Option(False, "--gres", help="For a synthetic DIR, read grefcoco-synth."),
    image_dir: Path | None = typer.Option(None, "--image-dir", help="Images directory (default ROOT/images)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Count samples, sentences, images, multi-target and no-target refs of a dataset."""
    from lvg.train.data import open_dataset

    source = open_dataset(dataset, split=split, image_dir=image_dir, prefer_gres=gres)
    samples = source.samples
    info = {
        "dataset": source.name,
        "format": source.kind,
        "split": split or "all",
        "samples": len(samples),
        "sentences": source.num_sentences(),
        "images": len({s.image_id for s in samples}),
        "multi_target": sum(len(s.ann_ids) > 1 for s in samples),
        "no_target": sum(s.no_target for s in samples),
        "skipped_without_sentences": source.skipped,
    }
    if json_out:
        echo_json(info)
        return
    for key, value in info.items():
        typer.echo(f"{key}: {value}")


def register(app: typer.Typer) -> None:
    """Add the ``lvg data`` group to ``app``."""
    app.add_typer(data_app, name="data")
