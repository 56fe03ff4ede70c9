"""``lvg infer`` (one image, a folder of images or a video) and ``lvg bench``: the runtime's commands.

Torch-free at import; a ``.safetensors`` model loads the torch backend when the command runs. Videos need the
``video`` extra (PyAV). ``--json`` prints one compact JSON object per line (JSON Lines): one per image, per
file of a folder (``file``) or per video frame (``frame``, ``time`` in seconds).
"""

from __future__ import annotations

import collections
import functools
import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import typer

from lvg._progress import progress
from lvg.cli import bench as _bench
from lvg.cli._common import PRECISION_HELP, check_outputs, echo_warnings, handle_errors, messages_as_lines
from lvg.cli._media import VideoWriter, folder_images, frame_name, is_video, read_video, same_place, video_info
from lvg.errors import InputError, LVGError


def _echo_line(data: dict[str, Any]) -> None:
    typer.echo(json.dumps(data, separators=(",", ":"), sort_keys=True, default=str))


def _summary(result: Any) -> str:
    """One human line for a result: mask share, box, score, instances, flags."""
    if result.no_target:
        return f"no target (p={result.no_target_prob:.3f})"
    w, h = result.image_size
    area = int(result.mask.sum())
    box = "none" if result.box is None else "[" + ", ".join(str(v) for v in result.box) + "]"
    line = f"mask {area} px ({100 * area / max(w * h, 1):.1f}% of {w}x{h}), box {box}, score {result.score:.3f}"
    if result.task == "gres" and len(result.instances) > 1:
        line += f", {len(result.instances)} instances"
    return line + (" (low confidence)" if result.low_confidence else "")


def _notes(grounder: Any, default_model: bool, text: str) -> None:
    """The honest signals, once per call: the bundled model's description, and the words it never saw."""
    if default_model and grounder.description:
        typer.echo(f"note: the default model is a {grounder.description}", err=True)
    unknown = grounder.unknown_words(text) if isinstance(text, str) else None
    if unknown:
        words = ", ".join(repr(w) for w in unknown[:12]) + (", ..." if len(unknown) > 12 else "")
        typer.echo(f"warning: the model never saw {len(unknown)} word(s) of the text in training: {words}; "
                   "its answer to them is a guess", err=True)


def _check_many(source: Path, out: Path | None, mask: Path | None, attention: Path | None) -> None:
    if attention is not None:
        raise InputError("--attention takes one image, not a folder or a video")
    for opt, path in (("--out", out), ("--mask", mask)):
        if path is None:
            continue
        if path.exists() and not path.is_dir() and not (opt == "--out" and is_video(path)):
            raise InputError(f"{opt} {path} must be a folder for a folder or video input")
        if source.is_dir() and same_place(path, source):
            raise InputError(f"{opt} {path} is the input folder; choose another folder")
        if source.is_dir() and opt == "--out" and is_video(path):
            raise InputError("--out for a folder of images is a folder of overlays, not a video")
    if out is not None and mask is not None and same_place(out, mask):
        raise InputError(f"--out and --mask name the same folder {out}")


def _one(g: Any, image: Path, text: str, opts: dict[str, Any], out: Path | None, mask: Path | None,
         attention: Path | None, json_out: bool, no_mask: bool, notes: Callable[[], None]) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = g.predict(image, text, return_attention=attention is not None, **opts)
    notes()  # after the request is known to be valid: a bad input gets its one error line alone
    echo_warnings(caught)
    result.write_outputs(overlay=out, mask=mask, attention=attention)  # all of them, or none
    if json_out:
        data = {"file": str(image), **result.to_dict(include_mask=not no_mask)}
        data["outputs"] = {k: str(v) for k, v in (("overlay", out), ("mask", mask), ("attention", attention)) if v}
        _echo_line(data)
        return
    typer.echo(f"no target (p={result.no_target_prob:.3f}) for {text!r}" if result.no_target else _summary(result))
    t = result.timings
    typer.echo(
        f"time {t['total']:.1f} ms (preprocess {t['preprocess']:.1f}, inference {t['inference']:.1f}, "
        f"postprocess {t['postprocess']:.1f}) on {result.model.get('device')}"
    )
    for label, path in (("overlay", out), ("mask", mask), ("attention", attention)):
        if path is not None:
            typer.echo(f"{label}: {path}")


def _emit(result: Any, head: dict[str, Any], name: str, json_out: bool, no_mask: bool) -> bool:
    """Print one input's line (or its error); True when it failed."""
    if isinstance(result, LVGError):
        typer.echo(f"error: {name}: {result}", err=True)
        if json_out:
            _echo_line({**head, "error": str(result)})
        return True
    if json_out:
        _echo_line({**head, **result.to_dict(include_mask=not no_mask)})
    else:
        typer.echo(f"{name}: {_summary(result)}")
    return False


def _folder(g: Any, folder: Path, text: str, opts: dict[str, Any], out: Path | None, mask: Path | None,
            json_out: bool, no_mask: bool, notes: Callable[[], None]) -> int:
    files = folder_images(folder)
    stems = collections.Counter(p.stem for p in files)
    if (out or mask) and max(stems.values()) > 1:
        clash = next(s for s, n in stems.items() if n > 1)
        raise InputError(f"{folder} holds several files named {clash}.*; their outputs would share {clash}.png")
    notes()
    failed = 0
    bar = progress(total=len(files), desc="infer")
    try:
        for path, result in zip(files, g.stream(files, text, on_error="yield", **opts)):
            if not isinstance(result, LVGError):
                result.write_outputs(overlay=out / f"{path.stem}.png" if out else None,
                                     mask=mask / f"{path.stem}.png" if mask else None)
            failed += _emit(result, {"file": str(path)}, path.name, json_out, no_mask)
            bar.update(1)
    finally:
        bar.close()
    if not json_out:
        typer.echo(f"{len(files) - failed} of {len(files)} images" + (f", {failed} failed" if failed else ""))
    return 2 if failed else 0


def _video(g: Any, video: Path, text: str, opts: dict[str, Any], out: Path | None, mask: Path | None,
           json_out: bool, no_mask: bool, notes: Callable[[], None]) -> int:
    count, rate = video_info(video)
    notes()
    meta: collections.deque = collections.deque()

    def frames() -> Iterator[Any]:
        for f in read_video(video):
            meta.append((f.index, f.time))
            yield f.rgb

    writer = VideoWriter(out, rate) if out is not None and is_video(out) else None
    bar = progress(total=count, desc="infer")
    n = 0
    try:
        with writer if writer is not None else nullcontext():
            for result in g.stream(frames(), text, **opts):
                index, time = meta.popleft()
                if writer is not None:
                    writer.write(result.overlay())
                result.write_outputs(overlay=None if out is None or writer is not None else frame_name(out, index),
                                     mask=None if mask is None else frame_name(mask, index))
                head = {"file": str(video), "frame": index, "time": None if time is None else round(time, 6)}
                _emit(result, head, f"frame {index}", json_out, no_mask)
                bar.update(1)
                n += 1
    finally:
        bar.close()
    if n == 0:
        raise InputError(f"{video} holds no video frame")
    if not json_out:
        typer.echo(f"{n} frames" + (f"; overlay video: {out}" if writer is not None else ""))
    return 0



@handle_errors
def infer(
    image: Path = typer.Argument(..., help="An image file, a folder of images, or a video (.mp4, .mov, .mkv, ...)."),
    text: str = typer.Argument(..., help="Referring expression, e.g. \"man on the left\"."),
    model: Path | None = typer.Option(
        None, "--model", "-m", help="Model file: .onnx, .engine/.plan or .safetensors (default: the bundled model)."
    ),
    task: str | None = typer.Option(None, "--task", help="ris | rec | gres (default: gres for GRES models, else ris)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Overlay: a file for one image (format by suffix), a folder for a folder or a "
        "video, or a video file (.mp4, ...) for a video."
    ),
    mask: Path | None = typer.Option(
        None, "--mask", help="Mask (255 = object): a .png (or lossless .tif / .bmp), a folder for many inputs."
    ),
    attention: Path | None = typer.Option(
        None, "--attention",
        help="Write per-expression attention maps as an image, format by suffix (torch checkpoints only).",
    ),
    json_out: bool = typer.Option(False, "--json",
                                  help="Print one compact JSON object per input (JSON Lines; mask as COCO RLE)."),
    no_mask: bool = typer.Option(False, "--no-mask", help="Leave the mask RLE out of --json."),
    device: str = typer.Option(
        "auto", "--device", help="auto | cpu | cuda | cuda:N | tensorrt (ONNX Runtime's TRT EP)."
    ),
    backend: str = typer.Option(
        "auto", "--backend", help="auto (by file suffix and precision) | onnxruntime | openvino | tensorrt | torch."),
    precision: str = typer.Option(
        "auto", "--precision", help=PRECISION_HELP),
    tokenizer: Path | None = typer.Option(None, "--tokenizer", help="Sentencepiece file overriding the embedded one."),
    threshold: float | None = typer.Option(None, "--threshold", help="Mask threshold (default: the model's, 0.35)."),
) -> None:
    """Segment and box the object TEXT refers to in IMAGE (an image, a folder of images or a video).

    Examples:

        lvg infer photo.jpg "man on the left" --model model.onnx --out overlay.png

        lvg infer photo.jpg "the red car" --model model.onnx --task rec --json

        lvg infer frames/ "the red car" --json --no-mask > boxes.jsonl

        lvg infer clip.mp4 "the red car" --out overlay.mp4
    """
    from lvg.runtime.grounder import Grounder

    if task is not None and task.lower() not in ("ris", "rec", "gres"):
        raise InputError(f"unknown task {task!r}; choose ris, rec or gres")
    many = image.is_dir() or is_video(image)
    if many:
        _check_many(image, out, mask, attention)
        check_outputs([image, model, tokenizer], {"--out": out if out and is_video(out) else None})
    else:
        check_outputs([image, model, tokenizer], {"--out": out, "--mask": mask, "--attention": attention})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = Grounder.load(model, backend=backend, device=device, tokenizer=tokenizer, precision=precision)
    echo_warnings(caught)
    if g.backend.note:
        typer.echo(f"note: {g.backend.note}", err=True)
    opts = {"task": task, "mask_threshold": threshold}
    notes = functools.partial(_notes, g, model is None, text)
    if not many:
        _one(g, image, text, opts, out, mask, attention, json_out, no_mask, notes)
        return
    with messages_as_lines():
        run = _folder if image.is_dir() else _video
        code = run(g, image, text, opts, out, mask, json_out, no_mask, notes)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add ``infer`` and ``bench`` to ``app``."""
    app.command("infer")(infer)
    app.command("bench")(_bench.bench)
