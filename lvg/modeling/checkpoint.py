"""Checkpoint IO: our safetensors checkpoints (config in the header) and official BEiT-3 ``.pth`` weights.

A checkpoint is opened, and its header read and checked, by :class:`lvg.core.model_file.ModelFile`; the
functions here take a path or an opened ``ModelFile`` and read only the tensors. Nothing here unpickles
arbitrary objects: our checkpoints are safetensors; official ``.pth`` files are read with
``torch.load(weights_only=True)``, which refuses pickles that would build or call anything beyond tensors
and plain containers.

Integrity: every checkpoint carries the CRC-32 of each tensor's bytes in its header (``tensor_crc32``, a JSON
object name -> 8 hex digits). Reading verifies the tensors it reads against it and refuses floating-point
tensors that hold NaN or infinite values, so damage inside the tensor data (the header intact) is a
:class:`CheckpointError` instead of weights a model is run or trained with. Files written before the
checksums existed are read without them (the finiteness check still applies). Writing goes through a
temporary file in the same folder, fsynced and renamed; an I/O error (a full disk) is a
:class:`CheckpointError` that leaves any existing file under the name untouched.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lvg.config import ModelConfig
from lvg.core.artifact import CHECKPOINT_CONFIG_KEY, CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION
from lvg.core.atomic import atomic_output
from lvg.core.limits import VISION_POSITIONS, parse_json_object
from lvg.core.model_file import ModelFile
from lvg.errors import CheckpointError, InputError, first_line

TRAIN_PREFIX = "train/"  # training-state tensors (optimizer moments, RNG) live under this prefix
CHECKSUM_KEY = "tensor_crc32"  # header entry: {tensor name: CRC-32 of its bytes, 8 hex digits}


def resolve_device(device: str | torch.device | None = None, *, index: int = 0) -> torch.device:
    """The torch device a model runs on: ``None``/``"auto"`` -> GPU ``index`` when CUDA is available, else
    the CPU; ``"cuda"`` -> GPU ``index`` (a process's local rank); ``"cuda:N"``, ``"cpu"`` as given.

    A device that does not exist here is an :class:`InputError` now, rather than torch's assertion when the
    first tensor moves.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda", index) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device {str(device)!r}: use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise InputError(f"unsupported device {str(device)!r}: use cpu, cuda, cuda:N or auto")
    if not torch.cuda.is_available():
        raise InputError(f"device {str(device)!r} needs a CUDA build of torch and a GPU; none is available")
    dev = torch.device("cuda", index) if dev.index is None else dev
    if dev.index >= torch.cuda.device_count():
        raise InputError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    return dev


def tensor_crc32(tensor: Tensor) -> str:
    """CRC-32 of a tensor's bytes as safetensors stores them (C order, native little-endian), 8 hex digits."""
    flat = tensor.detach().contiguous().cpu().reshape(-1)
    return f"{zlib.crc32(flat.view(torch.uint8).numpy()) & 0xFFFFFFFF:08x}"


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    extra_tensors: Mapping[str, Tensor] | None = None,
    metadata: Mapping[str, str] | None = None,
    before_replace: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``model``'s weights and config to a safetensors file, atomically (temp file + rename).

    ``extra_tensors`` keys must start with ``"train/"``; ``metadata`` values are strings (JSON for
    structured data). The header also gets every tensor's checksum (module docstring). A reader never sees a
    half-written file under ``path``. ``before_replace(tmp)`` runs once the new file is complete and synced,
    just before it is renamed over ``path`` (the training checkpoints rotate ``last`` there).

    Raises:
        CheckpointError: the file could not be written (a full disk, no permission); nothing under ``path``
            changed.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    cfg: ModelConfig = model.cfg  # type: ignore[assignment]
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    for k, v in (extra_tensors or {}).items():
        if not k.startswith(TRAIN_PREFIX):
            raise ValueError(f"extra tensor {k!r} must start with {TRAIN_PREFIX!r}")
        tensors[k] = v.detach().contiguous().cpu()
    meta = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_FORMAT_VERSION,
            CHECKPOINT_CONFIG_KEY: cfg.to_json()}
    meta.update(metadata or {})
    meta[CHECKSUM_KEY] = json.dumps({k: tensor_crc32(v) for k, v in tensors.items()}, sort_keys=True)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, error=CheckpointError) as tmp:
            open(tmp, "xb").close()
            # safetensors writes its files private (0600), as mkstemp would; give the checkpoint the mode any
            # new file of this user gets (the umask's), read from the placeholder created just above.
            mode = tmp.stat().st_mode & 0o777
            save_file(tensors, tmp, metadata=meta)
            os.chmod(tmp, mode)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            if before_replace is not None:
                before_replace(tmp)
    except (OSError, SafetensorError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc, 200)
        raise CheckpointError(f"cannot write checkpoint {path}: {detail}") from None
    return path


def read_checkpoint_tensors(path: str | os.PathLike | ModelFile, *, model_only: bool = False,
                            verify: bool = True, prefix: str = "") -> dict[str, Tensor]:
    """All tensors of a checkpoint (model and ``train/`` state), or with ``model_only`` the model's alone
    (the optimizer moments, twice the model's size, are then never read); with ``prefix``, only those whose
    names start with it (e.g. one set of training heads; the others are never read).

    ``verify``: check the tensors read against the header's checksums and refuse non-finite values
    (:func:`verify_tensors`); the loaders below verify after checking that the tensors fit the model, so
    that a checkpoint of another variant is reported as one.
    """
    from safetensors import safe_open

    model_file = ModelFile.open(path, checkpoint=True)
    try:
        with safe_open(str(model_file.path), framework="pt") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()
                       if k.startswith(prefix) and not (model_only and k.startswith(TRAIN_PREFIX))}
    except Exception as exc:  # safetensors raises its own error types for truncated or corrupt data
        raise CheckpointError(f"{model_file.path} is truncated or corrupt ({first_line(exc, 200)})") from None
    if verify:
        verify_tensors(model_file, tensors)
    return tensors


def verify_tensors(model_file: ModelFile, tensors: Mapping[str, Tensor]) -> None:
    """Refuse tensors of ``model_file`` that do not match the checksums in its header, or floating-point
    tensors holding NaN or infinite values (:class:`CheckpointError` naming the first one)."""
    path = model_file.path
    table = model_file.metadata.get(CHECKSUM_KEY)
    sums = parse_json_object(table, f"{path}: {CHECKSUM_KEY}", CheckpointError) if table is not None else {}
    for name, tensor in tensors.items():
        want = sums.get(name)
        if table is not None and (want is None or tensor_crc32(tensor) != want):
            raise CheckpointError(f"{path} is damaged: tensor {name} does not match its checksum")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path} is damaged: tensor {name} holds values that are not finite (NaN or inf)")


def load_checkpoint(
    path: str | os.PathLike | ModelFile,
    *,
    impl: str | None = None,
    device: str | torch.device = "cpu",
    expect: ModelConfig | None = None,
) -> nn.Module:
    """Build the model described by a checkpoint's config and load its weights (eval mode).

    ``path``: the checkpoint's path or its opened :class:`~lvg.core.model_file.ModelFile`. ``expect``: if
    given, the checkpoint's config must equal it (e.g. resuming a run), else :class:`CheckpointError` names
    the variant mismatch.
    """
    from lvg.modeling import build_model

    model_file = ModelFile.open(path, checkpoint=True)
    cfg = model_file.config
    if expect is not None:
        _check_config(model_file.path, cfg, expect)
    model = build_model(cfg, impl=impl)
    _load_verified(model, model_file)
    return model.to(device).eval()


def load_weights(model: nn.Module, path: str | os.PathLike | ModelFile) -> None:
    """Load a checkpoint's model weights into an already built ``model`` (e.g. to start a new run from them).

    The checkpoint's architecture must equal ``model.cfg``'s, else :class:`CheckpointError` names the
    variant mismatch. Settings that do not change what the weights compute may differ (the output
    thresholds, dropout rates, the kernel implementation, the name): a variant whose default threshold was
    retuned still starts from runs made before. The ``train/`` state is never read.
    """
    model_file = ModelFile.open(path, checkpoint=True)
    _check_config(model_file.path, model_file.config, model.cfg, architecture_only=True)
    _load_verified(model, model_file)


def _load_verified(model: nn.Module, model_file: ModelFile) -> None:
    """Read the model's tensors, check that they fit ``model`` (names, shapes), then that they are intact, then
    load them: a checkpoint of another variant is reported as that, damage as damage."""
    state = read_checkpoint_tensors(model_file, model_only=True, verify=False)
    check_state_fits(model, state, str(model_file.path))
    verify_tensors(model_file, state)
    model.load_state_dict(state, strict=True)


def _architecture(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with every field that leaves the weights' meaning unchanged set to a fixed value."""
    return cfg.replace(
        name="",
        kernel_impl="auto",
        # Initialisation settings matter only before any weight is loaded.
        encoder=replace(cfg.encoder, dropout=0.0, drop_path_rate=0.0, init_std=0.0, position_init="random"),
        latent=replace(cfg.latent, dropout=(0.0,) * len(cfg.latent.dropout)),
        preprocess=replace(cfg.preprocess, mask_threshold=0.5, no_target_threshold=0.5),
    )


def _check_config(path: str | os.PathLike, cfg: ModelConfig, expect: ModelConfig, *,
                  architecture_only: bool = False) -> None:
    # kernel_impl only picks an implementation of the same function, so it may always differ.
    if architecture_only:
        same = _architecture(cfg) == _architecture(expect)
    else:
        same = cfg.replace(kernel_impl="auto") == expect.replace(kernel_impl="auto")
    if not same:
        suffix = " (same name, other config)" if cfg.name == expect.name else ""
        raise CheckpointError(f"{path} holds variant {cfg.name!r}, which does not match {expect.name!r}{suffix}")


def load_state_strict(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load a full state dict, turning key or shape mismatches into one clear :class:`CheckpointError`."""
    check_state_fits(model, state, source)
    model.load_state_dict(state, strict=True)


def check_state_fits(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """:class:`CheckpointError` naming the missing, unexpected and reshaped keys, if ``state`` is not ``model``'s."""
    problems = state_mismatch({k: tuple(v.shape) for k, v in model.state_dict().items()}, state)
    if problems:
        raise CheckpointError(f"{source} does not fit this model: {problems}")


def state_mismatch(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, Any], *,
                   allow_extra: bool = False) -> str:
    """How ``state`` (name -> tensor) differs from ``expected`` (name -> shape): ``"N missing (e.g. k), N
    unexpected (e.g. k), N of another shape (e.g. k: got vs expected)"``, or ``""`` when it fits. With
    ``allow_extra``, keys ``expected`` does not name are not counted."""
    missing = sorted(set(expected) - set(state))
    unexpected = [] if allow_extra else sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and tuple(getattr(state[k], "shape", ())) != expected[k]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} of {len(expected)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs {expected[k]})")
    return ", ".join(parts)


# ----------------------------------------------------------------------------------------------
# Official BEiT-3 weights


@dataclass
class LoadReport:
    """What :func:`load_beit3_pretrained` did."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # backbone keys the file lacks (left at init)
    unexpected: list[str] = field(default_factory=list)  # file keys this model has no place for
    resampled: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    new: int = 0  # parameters outside the backbone (latent parts, heads): always freshly initialised

    def summary(self) -> str:
        text = f"loaded {len(self.loaded)} tensors, {len(self.missing)} missing, {len(self.unexpected)} unexpected"
        if self.resampled:
            text += "; resampled " + ", ".join(f"{k} {a[0]}->{b[0]} rows" for k, (a, b) in self.resampled.items())
        if self.missing:
            text += f"; missing e.g. {self.missing[:3]}"
        if self.unexpected:
            text += f"; unexpected e.g. {self.unexpected[:3]}"
        return text


def read_pth(path: Path) -> Mapping[str, Any]:
    """The state dict of an official ``.pth`` file, read with ``torch.load(weights_only=True)`` (no
    unpickling of anything but tensors) and memory-mapped where the file is torch's zip format, so checking
    a multi-GB file does not read it into memory. :class:`CheckpointError` with one line otherwise."""
    if not path.exists():
        raise CheckpointError(f"pretrained weights not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"pretrained weights path is a directory: {path}")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    # torch.save writes a zip archive; the legacy format is a pickle (protocol opcode 0x80).
    if not (zipfile.is_zipfile(path) or magic[:1] == b"\x80"):
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        # Keep the one line that names what was blocked (e.g. "unsupported GLOBAL posix.system").
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        what = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), "not plain tensors")
        raise CheckpointError(f"{path} was refused: it holds objects other than tensors ({what})") from None
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, Mapping):
        for key in ("model", "module", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                return obj[key]
        return obj
    raise CheckpointError(f"{path} does not hold a state dict")


def resample_vision_positions(table: Tensor, rows: int) -> Tensor:
    """Resize a vision position table ``(3 + g0^2, d)`` to ``(rows, d)`` bicubically over the patch grid.

    The first 3 rows (2 fairseq offset rows + the class token) are kept as they are.
    """
    head, grid = table[:3], table[3:]
    g0, g1 = round(grid.shape[0] ** 0.5), round((rows - 3) ** 0.5)
    if g0 * g0 != grid.shape[0] or g1 * g1 != rows - 3:
        raise CheckpointError(f"position table of {table.shape[0]} rows is not 3 + a square grid")
    d = grid.shape[1]
    grid = grid.float().reshape(1, g0, g0, d).permute(0, 3, 1, 2)  # (n, d) -> (1, d, g0, g0)
    grid = F.interpolate(grid, size=(g1, g1), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(g1 * g1, d).to(table.dtype)  # (1, d, g1, g1) -> (n', d)
    return torch.cat([head, grid], dim=0)


def resample_patch_kernel(weight: Tensor, patch: int) -> Tensor:
    """Resize a patch embedding's kernel ``(d, 3, p, p)`` to ``(d, 3, patch, patch)`` for an integer ratio.

    Pseudo-inverse resizing (FlexiViT): the new kernel gives a patch the response the old one gave that patch
    nearest-upsampled to ``p`` (going down: each ``k x k`` block summed), or, going up, the least-norm kernel
    whose block sums are the old weights (each weight spread over its block as ``w / k^2``). A constant colour
    thus keeps its response either way. Raises :class:`CheckpointError` when neither size divides the other.
    """
    d, c, p, q = weight.shape
    if p != q or max(p, patch) % min(p, patch):
        raise CheckpointError(f"patch kernel {p}x{q} cannot be resized to {patch}x{patch} (not an integer ratio)")
    if patch <= p:
        k = p // patch
        # (d, c, p, p) -> (d, c, patch, k, patch, k): the k x k block under each new kernel weight, summed.
        return weight.reshape(d, c, patch, k, patch, k).sum(dim=(3, 5))
    k = patch // p
    return weight.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3) / (k * k)


# Present in official checkpoints, used only by BEiT-3's masked-image pretraining.
IGNORED_PRETRAINED = ("beit3.vision_embed.mask_token",)


def load_beit3_pretrained(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load an official BEiT-3 checkpoint (``{"model": state_dict}`` with ``beit3.*`` keys) into the backbone.

    The vision position table is resampled to this model's grid (e.g. 199 or 579 rows -> 903).
    Raises :class:`CheckpointError` for a file that is not a BEiT-3 state dict or has other widths.
    """
    path = Path(path)
    state = read_pth(path)
    if not any(isinstance(k, str) and k.startswith("beit3.") for k in state):
        raise CheckpointError(f"{path} is not a BEiT-3 state dict (no 'beit3.*' keys)")
    own = model.state_dict()
    report = LoadReport()
    report.new = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("beit3."))
    take: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, Tensor):
            continue
        if key not in own or not key.startswith("beit3."):
            if key not in IGNORED_PRETRAINED:
                report.unexpected.append(key)
            continue
        if key == VISION_POSITIONS and value.shape != own[key].shape:
            resized = resample_vision_positions(value, own[key].shape[0])
            report.resampled[key] = (tuple(value.shape), tuple(resized.shape))
            value = resized
        if value.shape != own[key].shape:
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(value.shape)}, this model needs {tuple(own[key].shape)} "
                f"(a BEiT-3 of another size?)"
            )
        take[key] = value.to(own[key].dtype)
    report.loaded = sorted(take)
    report.missing = sorted(k for k in own if k.startswith("beit3.") and k not in take)
    model.load_state_dict(take, strict=False)
    return report


__all__ = [
    "CHECKSUM_KEY",
    "LoadReport",
    "check_state_fits",
    "load_beit3_pretrained",
    "load_checkpoint",
    "load_state_strict",
    "load_weights",
    "read_checkpoint_tensors",
    "resample_vision_positions",
    "save_checkpoint",
    "tensor_crc32",
    "verify_tensors",
]

