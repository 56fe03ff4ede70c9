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
"""

from __future__ import annotations

from torch import nn

from lvg.core.model_file import ModelFile
from lvg.errors import CheckpointError
from lvg.modeling.checkpoint import load_state_strict, load_weights, read_checkpoint_tensors

_BACKBONE = "beit3."


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
    else:
        raise CheckpointError(f"unknown init_parts {parts!r}")
    return (f"{kept} tensors ({parts}); left out {len(state) - kept} of the file's, the model's other "
            f"{len(own) - kept} keep their initialisation")
