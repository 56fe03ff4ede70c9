"""Which of another run's tensors start a new run (``TrainConfig.init_parts``).

The modes differ in which side must be whole, so that a mismatch is an error and not a module silently
left at its random initialisation:

- ``"all"``: the same architecture; every tensor on both sides.
- ``"backbone"``: the encoder alone (``beit3.*``), from any variant with the same encoder (a pretraining run).
- ``"shared"``: every tensor the model has must be in the file; the file's other modules are left out (a
  latent-off twin from a latent-on run).
- ``"grow"``: every tensor of the file must fit the model; the model's additions keep their initialisation
  (``lvg-s-xy`` from an ``lvg-s`` run).
- ``"common"``: ``shared`` and ``grow`` at once, for a twin that both lacks some of the file's modules and
  adds its own (``lvg-s-xy-nolatent`` from an ``lvg-s`` run). The encoder must be whole in the file; every
  other tensor the two share by name must match in shape.
- ``"resample"``: the same modules at another patch size or input size (``lvg-s-xy-stem-p16`` from an
  ``lvg-s-xy-stem`` run): the patch kernel and the vision position table are resized to the model's, and the
  pixel decoder keeps the file's last upsampling stages, those that work at the same scales; every other
  tensor must match by name and shape.
"""

from __future__ import annotations

from torch import Tensor, nn

from lvg.core.limits import PATCH_KERNEL, VISION_POSITIONS
from lvg.core.model_file import ModelFile
from lvg.errors import CheckpointError
from lvg.modeling.checkpoint import (
    load_state_strict,
    load_weights,
    read_checkpoint_tensors,
    resample_patch_kernel,
    resample_vision_positions,
)

_BACKBONE = "beit3."
_UPSAMPLE = "pixel_decoder.upsample."
_STAGE = 3  # modules per upsampling stage in PixelDecoder.upsample: ConvTranspose2d, GroupNorm, GELU


def init_model(model: nn.Module, init: ModelFile, parts: str) -> str:
    """Load ``init``'s model tensors into ``model`` as ``parts`` (one of the modes above) says; returns what was
    taken, for the run's log (``"all N tensors"``).

    Raises :class:`CheckpointError` naming the missing, unexpected or reshaped tensors when the file does not
    fit the mode."""
    if parts == "all":
        load_weights(model, init)
        return f"all {len(model.state_dict())} tensors"
    state = read_checkpoint_tensors(init, model_only=True)
    own = model.state_dict()
    source = str(init.path)
    if parts == "backbone":
        encoder = {k[len(_BACKBONE):]: v for k, v in state.items() if k.startswith(_BACKBONE)}
        load_state_strict(model.beit3, encoder, source)
        kept = len(encoder)
    elif parts == "shared":
        load_state_strict(model, {k: v for k, v in state.items() if k in own}, source)
        kept = len(own)
    elif parts == "grow":
        load_state_strict(model, {**own, **state}, source)
        kept = len(state)
    elif parts == "common":
        missing = sorted(k for k in own if k.startswith(_BACKBONE) and k not in state)
        if missing:
            raise CheckpointError(f"{source} does not hold this model's whole encoder: {len(missing)} encoder "
                                  f"tensors missing (e.g. {missing[0]})")
        shared = {k: v for k, v in state.items() if k in own}
        load_state_strict(model, {**own, **shared}, source)
        kept = len(shared)
    elif parts == "resample":
        resized, what = _resampled(state, own)
        load_state_strict(model, resized, source)
        return f"{len(state)} tensors, resampled: {what}"
    else:
        raise CheckpointError(f"unknown init_parts {parts!r}")
    return (f"{kept} tensors ({parts}); left out {len(state) - kept} of the file's, the model's other "
            f"{len(own) - kept} keep their initialisation")


def _resampled(state: dict[str, Tensor], own: dict[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    """``state`` fitted to ``own``'s patch size and grid (the ``"resample"`` mode), and what changed."""
    out = _last_stages(state, own)
    changed = []
    kernel, table = out.get(PATCH_KERNEL), out.get(VISION_POSITIONS)
    if kernel is not None and PATCH_KERNEL in own and kernel.shape != own[PATCH_KERNEL].shape:
        out[PATCH_KERNEL] = resample_patch_kernel(kernel, own[PATCH_KERNEL].shape[-1])
        changed.append(f"patch kernel {kernel.shape[-1]} -> {own[PATCH_KERNEL].shape[-1]}")
    if table is not None and VISION_POSITIONS in own and table.shape[0] != own[VISION_POSITIONS].shape[0]:
        out[VISION_POSITIONS] = resample_vision_positions(table, own[VISION_POSITIONS].shape[0])
        changed.append(f"vision positions {table.shape[0]} -> {own[VISION_POSITIONS].shape[0]} rows")
    stages = (_stages(state), _stages(own))
    if stages[0] != stages[1]:
        changed.append(f"decoder upsampling stages {stages[0]} -> {stages[1]} (the file's last)")
    return out, ", ".join(changed) or "nothing to resize"


def _stages(state: dict[str, Tensor]) -> int:
    return 1 + max((int(k[len(_UPSAMPLE):].split(".", 1)[0]) // _STAGE for k in state if k.startswith(_UPSAMPLE)),
                   default=-1)


def _last_stages(state: dict[str, Tensor], own: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with its upsampling stages renumbered so that the model's last stage is the file's last.

    Each stage doubles the decoder's resolution up to 1/8 scale; a finer patch needs fewer of them, and the
    stages that remain are those nearest the output, at the scales they were trained at. The file's coarsest
    stages are left out; a coarser-patch model's extra first stages keep their initialisation.
    """
    shift = (_stages(own) - _stages(state)) * _STAGE
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(_UPSAMPLE):
            index, rest = key[len(_UPSAMPLE):].split(".", 1)
            if int(index) + shift < 0:
                continue
            key = f"{_UPSAMPLE}{int(index) + shift}.{rest}"
        out[key] = value
    return {**{k: v for k, v in own.items() if k.startswith(_UPSAMPLE)}, **out}
