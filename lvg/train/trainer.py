"""The training loop: AdamW + warmup/cosine, AMP, clipping, DDP, periodic evaluation, exact resume.

Output directory layout (written by rank 0 only)::

    <out>/last.safetensors   latest checkpoint: model + optimizer + schedule + step + RNG states + config
    <out>/prev.safetensors   the one before it (a corrupt/truncated ``last`` falls back to it on resume)
    <out>/best.safetensors   weights with the best validation score so far (no training state)
    <out>/log.jsonl          one JSON object per line: {"kind": "train"|"eval"|"event", "step": ..., ...}
    <out>/train_config.json  the run's TrainConfig

Exact resume: the data order is a pure function of (seed, epoch) (:mod:`lvg.train.distributed`), the
learning rate a pure function of the step, and the checkpoint restores every random state the step uses
(torch CPU/CUDA per rank, numpy, python ``random``), so ``train(...)`` stopped after k steps and resumed
to n ends with the same parameters as an uninterrupted n-step run (tested bit-exactly on CPU).

Checkpoint layout (safetensors, :func:`lvg.modeling.save_checkpoint`): model tensors as usual;
``train/optim/<i>/<key>`` optimizer state tensors of parameter ``i`` (AdamW ``exp_avg``, ``exp_avg_sq``,
``step``); ``train/rng/torch/<rank>``, ``train/rng/cuda/<rank>/<device>`` and ``train/rng/numpy/<rank>``
random states. Metadata: ``train_config`` (TrainConfig JSON) and ``train_state`` (JSON: step, epoch,
optimizer param groups and parameter names, scheduler, grad scaler, python/numpy RNG scalars, best score).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lvg.core.model_file import ModelFile
from lvg.core.tokenizer import Tokenizer, check_vocabulary
from lvg.errors import CheckpointError, ConfigError, InputError, TokenizerError
from lvg.train.config import EXACTNESS_FIELDS, TrainConfig
from lvg.train.distributed import (
    DistInfo,
    ShardedBatchSampler,
    any_rank,
    barrier,
    cleanup_distributed,
    gather_objects,
    init_distributed,
    mean_over_ranks,
)
from lvg.train.losses import grounding_loss

log = logging.getLogger("lvg.train")

LAST, PREV, BEST = "last.safetensors", "prev.safetensors", "best.safetensors"
LOG_FILE, CONFIG_FILE = "log.jsonl", "train_config.json"
STATE_VERSION = 1

#: Parameters trained without weight decay besides every 0-/1-D tensor (norms, biases): embeddings and
#: learned tokens, whose scale is meaningful.
NO_DECAY_NAMES = ("text_embed", "cls_token", "embed_positions", "class_tokens", "concepts", "empty_token")
BACKBONE_PREFIX = "beit3."


class ResumeWarning(UserWarning):
    """Resuming could not be exact, or fell back to an older checkpoint."""


class AmpWarning(UserWarning):
    """Mixed precision was requested where it is unavailable (CPU)."""


@dataclass
class TrainResult:
    """What :func:`train` did. ``stopped`` is True when a signal or ``stop_at_step`` ended it early;
    ``model`` is the trained model (unwrapped from DDP, train mode), ``metrics`` the last evaluation."""

    out_dir: Path
    step: int
    total_steps: int
    stopped: bool
    checkpoint: Path | None
    metrics: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False)


# --------------------------------------------------------------------------------------------------
# Optimizer and schedule


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


# --------------------------------------------------------------------------------------------------
# Checkpoint state (de)serialisation


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


@dataclass
class _Loaded:
    model_file: ModelFile
    tensors: dict[str, Tensor]
    state: dict[str, Any]
    config: TrainConfig

    @property
    def path(self) -> Path:
        return self.model_file.path


def _read_train_header(path: Path) -> tuple[ModelFile, dict[str, Any], TrainConfig]:
    """The checkpoint, and the training state and config in its header (no tensors read);
    :class:`CheckpointError` if the file is not a training checkpoint this code can resume."""
    model_file = ModelFile.open(path, checkpoint=True)
    meta = model_file.metadata
    if "train_state" not in meta or "train_config" not in meta:
        raise CheckpointError(f"{path} holds no training state (a weights-only checkpoint cannot be resumed)")
    try:
        state = json.loads(meta["train_state"])
        config = TrainConfig.from_json(meta["train_config"])
    except (json.JSONDecodeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: training state is unreadable ({exc})") from None
    if state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{path}: training state version {state.get('version')} is not {STATE_VERSION}")
    return model_file, state, config


def _read_train_checkpoint(path: Path) -> _Loaded:
    """Read and validate a full training checkpoint; :class:`CheckpointError` if anything is off."""
    from lvg.modeling.checkpoint import read_checkpoint_tensors

    model_file, state, config = _read_train_header(path)
    tensors = read_checkpoint_tensors(model_file)  # reads every tensor: a truncated file fails here
    return _Loaded(model_file=model_file, tensors=tensors, state=state, config=config)


def find_resume_checkpoint(out_dir: Path) -> _Loaded | None:
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
            loaded = _read_train_checkpoint(path)
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
            return _read_train_header(Path(out_dir) / name)[2]
        except CheckpointError:
            continue  # missing or unusable: find_resume_checkpoint reports why, the config is only a default
    return None


def _tokenizer_metadata(tokenizer: Any) -> dict[str, str]:
    """Header entries that carry the run's tokenizer, so a checkpoint alone can be served or exported."""
    if tokenizer is None:
        return {}
    from lvg.core.artifact import tokenizer_metadata

    return tokenizer_metadata(tokenizer.model_bytes, tokenizer.identity)


def _save_training_checkpoint(model: nn.Module, out_dir: Path, *, tensors: dict[str, Tensor],
                              state: dict[str, Any], cfg: TrainConfig, extra: dict[str, str]) -> Path:
    """Rotate ``last`` to ``prev`` and write the new ``last`` atomically."""
    from lvg.modeling import save_checkpoint

    last, prev = out_dir / LAST, out_dir / PREV
    if last.exists():
        # last -> prev is one rename: at every instant a complete checkpoint exists under one of the names.
        os.replace(last, prev)
    return save_checkpoint(
        model, last, extra_tensors=tensors,
        metadata={"train_state": json.dumps(state), "train_config": cfg.to_json(), **extra},
    )


# --------------------------------------------------------------------------------------------------
# Environment checks


def check_output_dir(out_dir: Path, needed_bytes: int) -> None:
    """Create ``out_dir`` and make sure a file can be written there and ``needed_bytes`` are free."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory {out_dir}: {exc.strerror or exc}") from None
    if not out_dir.is_dir():
        raise InputError(f"output path {out_dir} is not a directory")
    probe = out_dir / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"output directory {out_dir} is not writable: {exc.strerror or exc}") from None
    free = shutil.disk_usage(out_dir).free
    if free < needed_bytes:
        raise InputError(
            f"output directory {out_dir} has {free / 2**20:.0f} MiB free; checkpoints of this model need about "
            f"{needed_bytes / 2**20:.0f} MiB"
        )


def _checkpoint_bytes(model: nn.Module) -> int:
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    # model + 2 AdamW moments, in last + prev + the temp file of the next save, plus best.
    return n * 3 * 3 + n


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and returns."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C aborts at once
        self.requested = True
        log.warning("signal %s received: stopping after this step and writing a checkpoint", signum)

    def __enter__(self) -> "_StopFlag":
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------------------------------
# Data


@dataclass
class TrainData:
    """The data of a run (built by :func:`build_data`; tests may pass their own).

    ``train``: a map-style dataset of GroundingDataset items (with ``set_epoch``); ``source``: the
    validation split's ``ReferSource`` (None: no evaluation); ``tokenizer``: the run's tokenizer.
    """

    train: Any
    source: Any
    tokenizer: Any
    val_split: str | None


def find_tokenizer(data: str, name: str, explicit: str | None = None) -> Path:
    """The tokenizer file: ``explicit`` if given, else the file ``name`` (the variant's
    ``preprocess.tokenizer``, e.g. ``synthetic.spm``) in the data directory or one of its parents."""
    if explicit:
        return Path(explicit)
    root = data_path(data) if data else Path(".")
    for folder in [root, *root.resolve().parents]:
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"no tokenizer given and no {name!r} found in {root} or its parents; pass --tokenizer FILE")


def data_path(spec: str) -> Path:
    """The directory a data spec (``DIR``, ``DIR:DATASET`` or ``DIR:DATASET:SPLITBY``) points into."""
    if Path(spec).is_dir():
        return Path(spec)
    pieces = spec.split(":")
    for k in (2, 1):
        if len(pieces) > k and Path(":".join(pieces[:-k])).is_dir():
            root = Path(":".join(pieces[:-k]))
            return root / pieces[-k] if (root / pieces[-k]).is_dir() else root
    return Path(spec)


class TokenizerMismatchWarning(UserWarning):
    """A tokenizer other than the one a checkpoint was trained with: its text ids mean other words."""


def tokenizer_for_checkpoint(ckpt: str | os.PathLike | ModelFile | None, data: str, model_cfg: Any,
                             explicit: str | None = None, *, strict: bool = False) -> Tokenizer:
    """The tokenizer to run checkpoint ``ckpt`` (None: freshly initialised weights) with on ``data``.

    ``explicit`` if given; else the one the checkpoint carries (its header, or a ``.spm`` beside it), since
    the text embeddings were learnt for those ids (:meth:`ModelFile.tokenizer`); else the variant's file
    found beside the data. A dataset made by another ``lvg data synth`` call has its own tokenizer, so
    "beside the data" is only the last resort. An explicit file that differs from the checkpoint's own warns
    (:class:`TokenizerMismatchWarning`), or with ``strict`` (resuming a run) is a :class:`ConfigError`.
    """
    if ckpt is not None:
        model_file = ModelFile.open(ckpt, checkpoint=True)
        tok = model_file.tokenizer(explicit or None)
        if tok is not None:
            if explicit and not model_file.is_own(tok):
                if strict:
                    raise TokenizerError(f"tokenizer {explicit} is not the one this run was trained with (it is in "
                                         f"{model_file.path}); unset tokenizer to continue with the run's own")
                warnings.warn(f"{explicit} is not the tokenizer {model_file.path} was trained with; its text ids mean "
                              "other words to this model (leave --tokenizer out to use the checkpoint's own)",
                              TokenizerMismatchWarning, stacklevel=2)
            return tok
    path = Path(explicit) if explicit else find_tokenizer(data, model_cfg.preprocess.tokenizer)
    tok = Tokenizer.from_file(path)
    check_vocabulary(tok, model_cfg, what=f"tokenizer {path}")
    return tok


def build_data(cfg: TrainConfig, model_cfg: Any, *, weights_from: str | os.PathLike | ModelFile | None = None,
               resuming: bool = False) -> TrainData:
    """Open ``cfg.data``'s training and validation splits (gREFER data first for GRES variants).

    ``weights_from``: the checkpoint the run's weights come from (the one it resumes, else
    ``cfg.init_from``, opened here when not given); its tokenizer reads the text, since the text embeddings
    were learnt for its ids. ``resuming``: ``weights_from`` is the run's own last checkpoint.
    """
    from lvg.train.data import GroundingDataset, open_dataset

    if not cfg.data:
        raise ConfigError("no training data: set 'data' in the config or pass --data")
    gres = model_cfg.head.gres
    # The dataset first: a wrong path is the error to report, not the tokenizer missing beside it.
    train_source = open_dataset(cfg.data, split=cfg.train_split, prefer_gres=gres)
    # Resuming with other ids under the trained embeddings would quietly spoil the run: an error (strict).
    tok = tokenizer_for_checkpoint(weights_from or cfg.init_from or None, cfg.data, model_cfg, cfg.tokenizer,
                                   strict=resuming)
    train_ds = GroundingDataset(train_source, preprocess=model_cfg.preprocess, tokenizer=tok, train=True,
                                seed=cfg.seed)
    val_source = open_dataset(cfg.data, split=cfg.val_split, prefer_gres=gres) if cfg.val_split else None
    return TrainData(train=train_ds, source=val_source, tokenizer=tok, val_split=cfg.val_split)


# --------------------------------------------------------------------------------------------------
# The loop


def _autocast(amp: str, device: torch.device):
    if amp == "off" or device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in batch.items()}


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    device: str | torch.device | None = None,
    show_progress: bool | None = None,
    stop_at_step: int | None = None,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
    data: TrainData | None = None,
) -> TrainResult:
    """Train ``cfg.variant`` on ``cfg.data``, writing checkpoints and logs to ``out_dir``.

    Args:
        resume: continue from ``out_dir``'s newest usable checkpoint (``last``, else ``prev``); without a
            checkpoint it starts from scratch (with a warning). Without ``resume`` an ``out_dir`` that already
            holds a run is an error (nothing is overwritten by accident).
        device: "cpu", "cuda", "cuda:1" or None (CUDA if available, else CPU; under torchrun the local rank's GPU).
        show_progress: progress bar on stderr (rank 0); None = when stderr is a terminal.
        stop_at_step: stop (checkpoint and return) once this step is reached, as a signal would.
        on_step: called on every rank after every optimizer step with ``(step, batch)`` (monitoring hooks).
        data: prebuilt datasets (default: :func:`build_data` from ``cfg``).

    Under ``torchrun`` (``WORLD_SIZE > 1``) it joins the process group, shards the data, wraps the model in
    DDP and leaves the group at the end. SIGINT/SIGTERM: the current step finishes, a checkpoint is written,
    and the function returns normally with ``stopped=True``.
    """
    from lvg.modeling import build_model, load_beit3_pretrained, load_weights, resolve_device
    from lvg.modeling.checkpoint import load_state_strict

    out = Path(out_dir)
    want_cuda = resolve_device(device).type == "cuda"  # also refuses a device this machine lacks, up front
    info = init_distributed("cuda" if want_cuda else "cpu")
    dev = resolve_device(device, index=info.local_rank)
    created = not out.exists()
    try:
        loaded = None
        if resume:
            loaded = find_resume_checkpoint(out)
            if loaded is None:
                # The first piece of a run split with --stop-at may name its start (--init, --pretrained).
                start = cfg.init_from or cfg.pretrained or "scratch"
                warnings.warn(f"--resume: no checkpoint in {out}; starting from {start}", ResumeWarning,
                              stacklevel=2)
            else:
                _check_resume_config(loaded, cfg)

        seed_everything(cfg.seed, info.rank)
        # Built right after seeding: a fresh run's initial weights depend on the seed alone.
        model = build_model(cfg.variant, impl=cfg.kernel_impl)
        model_cfg = model.cfg
        gres = model_cfg.head.gres
        if info.is_main:
            check_output_dir(out, _checkpoint_bytes(model))
            if not resume and ((out / LAST).exists() or (out / PREV).exists()):
                raise InputError(f"{out} already holds a training run; pass --resume to continue it or choose "
                                 "another output directory")
        barrier(info)
        if loaded is None and cfg.pretrained:
            report = load_beit3_pretrained(model, cfg.pretrained)
            if info.is_main:
                log.info("pretrained BEiT-3 %s: %s", cfg.pretrained, report.summary())
        weights_from = loaded.model_file if loaded is not None else None
        if loaded is None and cfg.init_from:
            weights_from = ModelFile.open(cfg.init_from, checkpoint=True)
            load_weights(model, weights_from)
            if info.is_main:
                log.info("initialised from %s", cfg.init_from)
        if loaded is not None:
            model_state = {k: v for k, v in loaded.tensors.items() if not k.startswith("train/")}
            load_state_strict(model, model_state, str(loaded.path))
        model.to(dev)

        if data is None:
            with warnings.catch_warnings():
                if not info.is_main:  # every rank reads the same files: one warning for the run, not one per rank
                    warnings.simplefilter("ignore", TokenizerMismatchWarning)
                data = build_data(cfg, model_cfg, weights_from=weights_from, resuming=loaded is not None)
        elif data.tokenizer is not None:
            check_vocabulary(data.tokenizer, model_cfg)
        n_train = len(data.train)
        spe = ShardedBatchSampler.steps_per_epoch(n_train, cfg.batch_size, info.world_size)
        if spe == 0:
            raise ConfigError(f"the training split has {n_train} samples, fewer than one global batch of "
                              f"{cfg.batch_size * info.world_size}")
        total = cfg.steps if cfg.steps > 0 else cfg.epochs * spe
        if total <= 0:
            raise ConfigError("set steps or epochs to a positive number")

        lr = cfg.resolved_lr(gres)
        opt = torch.optim.AdamW(param_groups(model, lr, cfg.backbone_lr_mult, cfg.weight_decay), lr=lr,
                                betas=(0.9, 0.999), eps=1e-8)
        amp = cfg.amp
        if amp != "off" and dev.type != "cuda":
            warnings.warn(f"amp={amp} needs CUDA; training in float32 on {dev.type}", AmpWarning, stacklevel=2)
            amp = "off"
        scaler = torch.amp.GradScaler("cuda", enabled=(amp == "fp16"))

        step, best = 0, None
        if loaded is not None:
            _load_optimizer_state(opt, loaded.tensors, loaded.state["optimizer"])
            if loaded.state.get("scaler") and amp == "fp16":
                scaler.load_state_dict(loaded.state["scaler"])
            step = int(loaded.state["step"])
            best = loaded.state.get("best")
            _restore_rng(loaded, info, dev)
            if info.is_main:
                log.info("resumed from %s at step %d", loaded.path, step)
        else:
            # The RNG streams of step 0 start here, after model building, in both fresh and resumed runs
            # (a resumed run restores the streams saved at its step instead).
            seed_everything(cfg.seed + 7919, info.rank)

        ddp_model: nn.Module = model
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ddp_model = DistributedDataParallel(
                model, device_ids=[dev.index] if dev.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters,
            )

        if info.is_main:
            (out / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
        logger = _JsonlLog(out / LOG_FILE if info.is_main else None)
        if info.is_main:
            logger.write({"kind": "event", "event": "resume" if loaded is not None else "start", "step": step,
                          "total_steps": total, "world_size": info.world_size, "device": str(dev),
                          "variant": cfg.variant, "train_samples": n_train})

        from lvg._progress import progress as make_progress

        hide: bool | None = None if show_progress is None else not show_progress
        bar = make_progress(total=total, desc="train", disable=True if not info.is_main else hide)
        bar.n = step
        history: list[dict[str, Any]] = []
        metrics: dict[str, Any] | None = None
        stopped = False
        ckpt_path: Path | None = loaded.path if loaded is not None else None
        window: dict[str, float] = {}
        window_steps, window_start = 0, time.perf_counter()
        samples_per_step = cfg.batch_size * info.world_size
        tok_meta = _tokenizer_metadata(data.tokenizer)

        def save(step_now: int) -> Path | None:
            nonlocal ckpt_path
            tensors, state = _collect_state(opt, scaler, step_now, spe, best, info, dev)
            if info.is_main:
                ckpt_path = _save_training_checkpoint(model, out, tensors=tensors, state=state, cfg=cfg,
                                                      extra=tok_meta)
            barrier(info)
            return ckpt_path

        def run_eval(step_now: int, final: bool) -> dict[str, Any] | None:
            nonlocal best
            if not data.val_split or data.source is None:
                return None
            from lvg.modeling.runner import ArrayRunner
            from lvg.train.evaluate import evaluate

            with preserved_rng(dev), _autocast(amp, dev):
                result = evaluate(
                    ArrayRunner(model, dev), data.source, data.val_split, data.tokenizer,
                    task=cfg.resolved_task(gres), batch_size=cfg.eval_batch_size,
                    max_sentences=0 if final else cfg.eval_max_sentences, dist_info=info,
                    text_swap=cfg.eval_text_swap,
                )
            key = "gIoU" if "gIoU" in result else "mIoU" if "mIoU" in result else "acc@0.5"
            score = result.get(key)
            if info.is_main:
                logger.write({"kind": "eval", "step": step_now, **result})
                if score is not None and (best is None or score > best["score"]):
                    best = {"score": score, "metric": key, "step": step_now}
                    from lvg.modeling import save_checkpoint

                    save_checkpoint(model, out / BEST, metadata={"best": json.dumps(best),
                                                                 "train_config": cfg.to_json(), **tok_meta})
            best = gather_objects(best, info)[0]
            return result

        model.train()
        with _StopFlag() as stop_flag, bar:
            while step < total and not stopped:
                epoch, offset = divmod(step, spe)
                if hasattr(data.train, "set_epoch"):
                    data.train.set_epoch(epoch)
                loader = torch.utils.data.DataLoader(
                    data.train,
                    batch_sampler=ShardedBatchSampler(n_train, cfg.batch_size, rank=info.rank,
                                                      world_size=info.world_size, seed=cfg.seed, epoch=epoch,
                                                      start_step=offset),
                    num_workers=cfg.num_workers,
                    pin_memory=dev.type == "cuda",
                    # Own generator: creating the iterator must not draw from the global torch RNG, whose
                    # stream a resumed run restores exactly.
                    generator=torch.Generator().manual_seed(cfg.seed * 7 + epoch),
                )
                for batch in loader:
                    parts = _train_step(ddp_model, opt, scaler, batch, cfg, amp, dev,
                                        lr_factor(step, total, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio))
                    step += 1
                    if on_step is not None:
                        on_step(step, batch)
                    for k, v in parts.items():
                        window[k] = window.get(k, 0.0) + v
                    window_steps += 1
                    bar.update(1)
                    last_step = step >= total
                    if cfg.log_every and (step % cfg.log_every == 0 or last_step):
                        keys = sorted(window)
                        means = mean_over_ranks([window[k] / window_steps for k in keys], info, dev)
                        elapsed = time.perf_counter() - window_start
                        record = {"kind": "train", "step": step, "epoch": epoch,
                                  "lr": opt.param_groups[-1]["lr"],
                                  "samples_per_s": window_steps * samples_per_step / max(elapsed, 1e-9),
                                  **{_log_key(k): v for k, v in zip(keys, means)}}
                        history.append(record)
                        if info.is_main:
                            logger.write(record)
                            bar.set_postfix(loss=record["loss"], sps=record["samples_per_s"])
                        window, window_steps, window_start = {}, 0, time.perf_counter()
                    if cfg.eval_every and step % cfg.eval_every == 0 and not last_step:
                        metrics = run_eval(step, final=False)
                    want_stop = any_rank(stop_flag.requested or (stop_at_step is not None and step >= stop_at_step),
                                         info, dev)
                    if last_step or want_stop or (cfg.save_every and step % cfg.save_every == 0):
                        # Save before the final evaluation: a kill during a long evaluation must not lose
                        # the last steps (the evaluation writes best.safetensors itself).
                        save(step)
                        if last_step:
                            metrics = run_eval(step, final=True) or metrics
                    if want_stop and not last_step:
                        stopped = True
                        if info.is_main:
                            logger.write({"kind": "event", "event": "stopped", "step": step})
                        break
                    if last_step:
                        break
        if info.is_main:
            logger.write({"kind": "event", "event": "done" if not stopped else "paused", "step": step})
        return TrainResult(out_dir=out, step=step, total_steps=total, stopped=stopped, checkpoint=ckpt_path,
                           metrics=metrics, history=history, model=model)
    except BaseException:
        # A run that failed before writing anything (bad data, wrong tokenizer...) leaves no empty directory
        # behind to trip up the next attempt's "already holds a run" check or the user.
        if created and info.is_main and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    finally:
        cleanup_distributed()


def _log_key(part: str) -> str:
    return {"total": "loss", "grad_norm": "grad_norm"}.get(part, f"loss_{part}")


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, scaler: Any, batch: dict[str, Any],
                cfg: TrainConfig, amp: str, dev: torch.device, factor: float) -> dict[str, float]:
    for group in opt.param_groups:
        group["lr"] = group["base_lr"] * factor
    batch = _to_device(batch, dev)
    with _autocast(amp, dev):
        outputs = model(batch["image"], batch["text_ids"], batch["text_mask"])
    parts = grounding_loss(
        outputs, batch["target"], batch.get("no_target"),
        bce=cfg.loss_bce, dice=cfg.loss_dice, contrastive=cfg.loss_contrastive, contrastive_kind=cfg.contrastive,
        gamma=cfg.gamma, tau=cfg.tau, no_target_weight=cfg.loss_no_target,
    )
    opt.zero_grad(set_to_none=True)
    scaler.scale(parts["total"]).backward()
    scaler.unscale_(opt)
    params = [p for g in opt.param_groups for p in g["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    if scaler.is_enabled():
        scaler.step(opt)  # skips the step itself on inf/NaN gradients and lowers the scale
        scaler.update()
    elif torch.isfinite(norm):
        opt.step()
    else:
        # Gradients are identical on all ranks after DDP's all-reduce, so every rank skips together.
        warnings.warn("non-finite gradient: optimizer step skipped", RuntimeWarning, stacklevel=2)
    out = {k: float(v.detach()) for k, v in parts.items()}
    out["grad_norm"] = float(norm)
    return out


def _collect_state(opt: torch.optim.Optimizer, scaler: Any, step: int, spe: int, best: Any, info: DistInfo,
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


def _restore_rng(loaded: _Loaded, info: DistInfo, dev: torch.device) -> None:
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


def _check_resume_config(loaded: _Loaded, cfg: TrainConfig) -> None:
    old = loaded.config
    if old.variant != cfg.variant:
        raise CheckpointError(f"{loaded.path} is a run of variant {old.variant!r}, not {cfg.variant!r}")
    changed = [f for f in EXACTNESS_FIELDS if getattr(old, f) != getattr(cfg, f)]
    if changed:
        warnings.warn(
            f"resuming with changed settings {changed} (checkpoint: "
            + ", ".join(f"{f}={getattr(old, f)!r}" for f in changed)
            + "): the run will not match an uninterrupted one", ResumeWarning, stacklevel=3)


class _JsonlLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def read_log(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``<out_dir>/log.jsonl`` (a torn last line after a crash is ignored)."""
    path = Path(out_dir) / LOG_FILE
    records = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


__all__ = [
    "AmpWarning",
    "ResumeWarning",
    "TokenizerMismatchWarning",
    "TrainData",
    "TrainResult",
    "build_data",
    "check_output_dir",
    "find_resume_checkpoint",
    "find_tokenizer",
    "lr_factor",
    "param_groups",
    "read_log",
    "run_config",
    "seed_everything",
    "tokenizer_for_checkpoint",
    "train",
]
