"""What a training run saves and restores so that a killed run resumes exactly.

Output files of a run (written by rank 0 only)::

    <out>/last.safetensors   latest checkpoint: model + optimizer + schedule + step + RNG states + config
    <out>/prev.safetensors   the one before it (a corrupt/truncated ``last`` falls back to it on resume)
    <out>/best.safetensors   weights with the best validation score so far (no training state)

Exact resume: the data order is a pure function of (seed, epoch) (:mod:`lvg.train.distributed`), the
learning rate a pure function of the step (:mod:`lvg.train.optim`), and the checkpoint restores every
random state the step uses (torch CPU/CUDA per rank, numpy, python ``random``), so a run stopped after k
steps and resumed to n ends with the same parameters as an uninterrupted n-step run (tested bit-exactly on
CPU).

Integrity: a checkpoint is resumed from only if every tensor matches the checksum in its header, every
floating-point tensor (weights, optimizer moments) is finite and its training state can be restored (valid
random states, an optimizer state of this shape); otherwise it is skipped like a truncated file. Saving writes
the new checkpoint completely (temporary file, fsync) before anything is renamed, and ``last`` becomes
``prev`` only when it is a checkpoint that was verified readable (written by this process, or resumed from);
an unverified ``last`` (one that resuming skipped as damaged) is replaced without touching ``prev``. A save
that fails (a full disk) is a :class:`~lvg.errors.CheckpointError` that leaves ``last`` and ``prev`` as they
were. Resuming also cuts ``log.jsonl`` back to the step it resumes from.

Checkpoint layout (safetensors, :func:`lvg.modeling.save_checkpoint`): model tensors as usual;
``train/optim/<i>/<key>`` optimizer state tensors of parameter ``i`` (AdamW ``exp_avg``, ``exp_avg_sq``,
``step``); ``train/rng/torch/<rank>``, ``train/rng/cuda/<rank>/<device>`` and ``train/rng/numpy/<rank>``
random states. Metadata: ``train_config`` (TrainConfig JSON) and ``train_state`` (JSON: step, epoch,
optimizer param groups and parameter names, scheduler, grad scaler, python/numpy RNG scalars, best score).
"""

from __future__ import annotations

import json
import os
import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lvg.core.artifact import tokenizer_metadata
from lvg.core.headers import read_safetensors_header
from lvg.core.limits import parse_json_object
from lvg.core.model_file import ModelFile
from lvg.errors import ArtifactError, CheckpointError, ConfigError
from lvg.modeling import save_checkpoint
from lvg.modeling.checkpoint import TRAIN_PREFIX, load_state_strict, read_checkpoint_tensors
from lvg.train.config import EXACTNESS_FIELDS, TrainConfig
from lvg.train.distributed import DistInfo, gather_objects
from lvg.train.run_dir import truncate_log

__all__ = [
    "BEST",
    "LAST",
    "PREV",
    "ResumePoint",
    "ResumeWarning",
    "check_resume_config",
    "collect_state",
    "find_resume_checkpoint",
    "preserved_rng",
    "read_resume_point",
    "restore_state",
    "run_config",
    "save_training_checkpoint",
    "seed_everything",
    "tokenizer_header",
]

LAST, PREV, BEST = "last.safetensors", "prev.safetensors", "best.safetensors"
STATE_VERSION = 1


class ResumeWarning(UserWarning):
    """Resuming could not be exact, or fell back to an older checkpoint."""


# --------------------------------------------------------------------------------------------------
# Optimizer and random states as checkpoint tensors and JSON


def _optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, Tensor):
                tensors[f"train/optim/{idx}/{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("train/optim/"):
            _, _, idx, name = key.split("/", 3)
            state.setdefault(int(idx), {})[name] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    own_groups = opt.state_dict()["param_groups"]
    groups = meta["param_groups"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in own_groups]:
        raise CheckpointError("optimizer state does not match this model's parameter groups")
    opt.load_state_dict({"state": state, "param_groups": groups})


def _rng_state(device: torch.device) -> dict[str, Any]:
    """This process's random states as picklable plain values (gathered to rank 0 for the checkpoint)."""
    np_state = np.random.get_state()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": _py_state_to_json(random.getstate()),
    }
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    name, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys, int(pos), int(has_gauss), float(gauss)))
    random.setstate(_py_state_from_json(state["python"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _py_state_to_json(st: Any) -> list[Any]:
    version, internal, gauss = st
    return [version, list(internal), gauss]


def _py_state_from_json(st: list[Any]) -> Any:
    version, internal, gauss = st
    return (version, tuple(internal), gauss)


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed torch (CPU and CUDA), numpy and ``random``; ranks get different streams (dropout, Gumbel)."""
    s = int(seed) + 1_000 * int(rank)
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)


@contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Run a block (evaluation) without disturbing the training random streams."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
        np.random.set_state(np_state)
        random.setstate(py_state)


# --------------------------------------------------------------------------------------------------
# Reading and writing training checkpoints


@dataclass
class ResumePoint:
    """A training checkpoint a run continues from: the file, every tensor in it, the training state and the
    run's config from its header."""

    model_file: ModelFile
    tensors: dict[str, Tensor]
    state: dict[str, Any]
    config: TrainConfig

    @property
    def path(self) -> Path:
        return self.model_file.path

    def model_state(self) -> dict[str, Tensor]:
        """The model's weights (the tensors outside ``train/``)."""
        return {k: v for k, v in self.tensors.items() if not k.startswith(TRAIN_PREFIX)}


def read_train_header(path: Path) -> tuple[ModelFile, dict[str, Any], TrainConfig]:
    """The checkpoint, and the training state and config in its header (no tensors read);
    :class:`CheckpointError` if the file is not a training checkpoint this code can resume."""
    model_file = ModelFile.open(path, checkpoint=True)
    meta = model_file.metadata
    if "train_state" not in meta or "train_config" not in meta:
        raise CheckpointError(f"{path} holds no training state (a weights-only checkpoint cannot be resumed)")
    state = parse_json_object(meta["train_state"], f"{path}: training state", CheckpointError)
    config_data = parse_json_object(meta["train_config"], f"{path}: training config", CheckpointError)
    try:
        config = TrainConfig.from_dict(config_data)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: training state is unreadable ({exc})") from None
    if state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{path}: training state version {state.get('version')} is not {STATE_VERSION}")
    return model_file, state, config


def read_resume_point(path: Path) -> ResumePoint:
    """Read and validate a full training checkpoint; :class:`CheckpointError` if anything is off: a
    truncated file, a tensor that does not match its checksum, a non-finite weight or optimizer moment, or a
    training state that cannot be restored."""
    model_file, state, config = read_train_header(path)
    tensors = read_checkpoint_tensors(model_file)  # every tensor, checked against its checksum and for NaN / inf
    point = ResumePoint(model_file=model_file, tensors=tensors, state=state, config=config)
    _check_restorable(point)
    _VERIFIED[str(Path(path).resolve())] = _identity(Path(path))
    return point


def _check_restorable(point: ResumePoint) -> None:
    """Restore the saved random states and optimizer layout on scratch objects: what cannot be restored is
    refused now, while another checkpoint can still be chosen, rather than half-way through setting up."""
    state, tensors = point.state, point.tensors
    try:
        step, world = int(state["step"]), int(state.get("world_size", 1))
        if step < 0 or world < 1 or len(state["rng"]) != world:
            raise ValueError(f"step {step}, world size {world}, {len(state['rng'])} random states")
        for rank in range(world):
            torch.Generator().set_state(tensors[f"train/rng/torch/{rank}"])
            meta = state["rng"][rank]
            _set_scratch_rng(tensors[f"train/rng/numpy/{rank}"], meta["numpy"], meta["python"])
        groups = state["optimizer"]["param_groups"]
        if not isinstance(groups, list) or not all(isinstance(g.get("params"), list) for g in groups):
            raise ValueError("optimizer parameter groups are malformed")
        for key in tensors:
            if key.startswith("train/optim/"):
                int(key.split("/")[2])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"{point.path}: the training state cannot be restored (random state or "
                              f"optimizer: {str(exc).strip()[:160] or type(exc).__name__})") from None


def _set_scratch_rng(numpy_keys: Tensor, numpy_meta: list[Any], python_meta: list[Any]) -> None:
    keys = numpy_keys.numpy().astype(np.uint32)
    name, pos, has_gauss, gauss = numpy_meta
    np.random.RandomState().set_state((name, keys, int(pos), int(has_gauss), float(gauss)))
    random.Random().setstate(_py_state_from_json(python_meta))


def find_resume_checkpoint(out_dir: Path) -> ResumePoint | None:
    """The newest readable training checkpoint in ``out_dir``: ``last``, else ``prev`` (with a
    :class:`ResumeWarning` saying why ``last`` was skipped); ``None`` when neither exists.

    Raises :class:`CheckpointError` when checkpoints exist but none is readable.
    """
    errors = []
    for name in (LAST, PREV):
        path = out_dir / name
        if not path.exists():
            continue
        try:
            loaded = read_resume_point(path)
        except CheckpointError as exc:
            errors.append(str(exc))
            warnings.warn(f"skipping unusable checkpoint {path}: {exc}", ResumeWarning, stacklevel=2)
            continue
        return loaded
    if errors:
        raise CheckpointError(f"no usable checkpoint in {out_dir}: " + "; ".join(errors))
    return None


def run_config(out_dir: str | os.PathLike) -> TrainConfig | None:
    """The :class:`TrainConfig` of the run in ``out_dir``, read from the header of its newest checkpoint
    (``last``, else ``prev``; no tensors are read); ``None`` when it holds no readable one.

    ``lvg train --resume`` starts from it, so continuing a run needs no flag it was started with.
    """
    for name in (LAST, PREV):
        try:
            return read_train_header(Path(out_dir) / name)[2]
        except CheckpointError:
            continue  # missing or unusable: find_resume_checkpoint reports why, the config is only a default
    return None


def tokenizer_header(tokenizer: Any) -> dict[str, str]:
    """Header entries that carry the run's tokenizer, so a checkpoint alone can be served or exported."""
    if tokenizer is None:
        return {}
    return tokenizer_metadata(tokenizer.model_bytes, tokenizer.identity)


#: Checkpoints known to be readable, by resolved path: (inode, size, mtime) when they were verified (resumed
#: from, or written and checked by this process). A cache: a checkpoint not in it is verified by reading it.
_VERIFIED: dict[str, tuple[int, int, int]] = {}


def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _verified_readable(path: Path) -> bool:
    """Whether ``path`` is a checkpoint that was verified readable (and has not changed since), else whether
    reading it now succeeds."""
    try:
        if _VERIFIED.get(str(path.resolve())) == _identity(path):
            return True
    except OSError:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_resume_point(path)
    except CheckpointError:
        return False
    return True


def save_training_checkpoint(model: nn.Module, out_dir: Path, *, tensors: dict[str, Tensor],
                              state: dict[str, Any], cfg: TrainConfig, extra: dict[str, str]) -> Path:
    """Write the new ``last`` atomically; the current ``last`` becomes ``prev`` only if it was verified readable.

    The new file is written and synced completely first; then ``last`` -> ``prev`` (one rename, when ``last``
    is verified), then the new file -> ``last`` (one rename). At every instant a complete, verified checkpoint
    exists under ``last`` or ``prev``.

    Raises:
        CheckpointError: the new checkpoint could not be written (a full disk): ``last`` and ``prev`` are as
            they were, and the run can stop cleanly or save again later.
    """
    last, prev = out_dir / LAST, out_dir / PREV

    def rotate(new: Path) -> None:
        try:
            read_safetensors_header(new)  # the new file is complete: its header matches its size
        except ArtifactError as exc:
            raise CheckpointError(f"the new checkpoint {last} was not written completely ({exc})") from None
        if last.exists() and _verified_readable(last):
            os.replace(last, prev)  # a verified checkpoint replaces prev; a damaged last is just overwritten

    path = save_checkpoint(
        model, last, extra_tensors=tensors, before_replace=rotate,
        metadata={"train_state": json.dumps(state), "train_config": cfg.to_json(), **extra},
    )
    _VERIFIED[str(path.resolve())] = _identity(path)
    return path


# --------------------------------------------------------------------------------------------------
# The state of a running loop


def collect_state(opt: torch.optim.Optimizer, scaler: Any, step: int, spe: int, best: Any, info: DistInfo,
                   dev: torch.device) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors, opt_meta = _optimizer_state(opt)
    rng_all = gather_objects(_rng_state(dev), info)
    rng_meta = []
    for rank, st in enumerate(rng_all):
        tensors[f"train/rng/torch/{rank}"] = st["torch"]
        tensors[f"train/rng/numpy/{rank}"] = st["numpy_keys"]
        if "cuda" in st:
            tensors[f"train/rng/cuda/{rank}"] = st["cuda"]
        rng_meta.append({"numpy": st["numpy"], "python": st["python"]})
    state = {
        "version": STATE_VERSION,
        "step": step,
        "epoch": step // spe,
        "step_in_epoch": step % spe,
        "world_size": info.world_size,
        "optimizer": opt_meta,
        "scheduler": {"kind": "warmup_cosine", "step": step},
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "rng": rng_meta,
        "best": best,
    }
    return tensors, state


def _restore_rng(loaded: ResumePoint, info: DistInfo, dev: torch.device) -> None:
    saved_world = int(loaded.state.get("world_size", 1))
    rank = info.rank
    if saved_world != info.world_size:
        warnings.warn(
            f"checkpoint was written by {saved_world} process(es), this run has {info.world_size}: the data "
            "order changes and the resume is not exact", ResumeWarning, stacklevel=3)
        seed_everything(loaded.config.seed + int(loaded.state["step"]), rank)
        return
    meta = loaded.state["rng"][rank]
    state = {
        "torch": loaded.tensors[f"train/rng/torch/{rank}"],
        "numpy_keys": loaded.tensors[f"train/rng/numpy/{rank}"],
        "numpy": meta["numpy"],
        "python": meta["python"],
    }
    if f"train/rng/cuda/{rank}" in loaded.tensors:
        state["cuda"] = loaded.tensors[f"train/rng/cuda/{rank}"]
    _set_rng_state(state, dev)


def check_resume_config(loaded: ResumePoint, cfg: TrainConfig) -> None:
    old = loaded.config
    if old.variant != cfg.variant:
        raise CheckpointError(f"{loaded.path} is a run of variant {old.variant!r}, not {cfg.variant!r}")
    changed = [f for f in EXACTNESS_FIELDS if getattr(old, f) != getattr(cfg, f)]
    if changed:
        warnings.warn(
            f"resuming with changed settings {changed} (checkpoint: "
            + ", ".join(f"{f}={getattr(old, f)!r}" for f in changed)
            + "): the run will not match an uninterrupted one", ResumeWarning, stacklevel=3)


def heads_tensors(net: nn.Module) -> dict[str, Tensor]:
    """The weights of a net of training-only heads (``net.heads()``) under its ``checkpoint_prefix``: what a
    checkpoint keeps of them beside the model's."""
    return {net.checkpoint_prefix + k: v for k, v in net.heads().items()}  # type: ignore[operator]


def restore_heads(net: nn.Module, point: ResumePoint) -> None:
    """Load the training-only heads of ``net`` saved by :func:`heads_tensors` (its model is loaded already).

    Raises:
        CheckpointError: the checkpoint does not hold exactly these heads.
    """
    prefix: str = net.checkpoint_prefix  # type: ignore[assignment]
    heads = {k[len(prefix):]: v for k, v in point.tensors.items() if k.startswith(prefix)}
    if set(heads) != set(net.heads()):  # type: ignore[operator]
        raise CheckpointError(f"{point.path} does not hold this run's training heads ({prefix}*)")
    load_state_strict(net, {**net.state_dict(), **heads}, str(point.path))


def restore_state(point: ResumePoint, opt: torch.optim.Optimizer, scaler: Any, info: DistInfo,
                  dev: torch.device) -> tuple[int, Any]:
    """Put the optimizer, the grad scaler and this rank's random streams back as ``point`` saved them;
    returns the step and the best score so far. ``log.jsonl`` is cut back to that step (rank 0), so the steps
    run again after an interruption are logged once.

    Raises:
        CheckpointError: the saved state does not fit this run's optimizer or cannot be restored.
    """
    try:
        _load_optimizer_state(opt, point.tensors, point.state["optimizer"])
        if point.state.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(point.state["scaler"])
        _restore_rng(point, info, dev)
        step = int(point.state["step"])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{point.path}: the training state cannot be restored "
                              f"({str(exc).strip()[:160] or type(exc).__name__})") from None
    if info.is_main:
        truncate_log(point.path.parent, step)
    return step, point.state.get("best")
