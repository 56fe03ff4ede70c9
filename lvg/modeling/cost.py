"""Model cost: parameters per part and FLOPs at the model's fixed input size.

FLOP convention: one multiply-add = 2 FLOPs (``gflops``); ``gmacs`` is the same count in multiply-adds,
the unit that fvcore-style counters print as "FLOPs". Attention (``Q K^T`` and ``P V``) is counted.

The count runs the model on PyTorch's meta device under ``FlopCounterMode``: no memory is allocated for
weights or activations, so counting ``lvg-b`` takes seconds and no RAM. On the meta device
scaled-dot-product attention decomposes into matmuls, which the counter sees (on a real CPU tensor it
dispatches to a fused kernel the stock counter has no formula for, and attention would be missed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from lvg.config import ModelConfig, get_config
from lvg.modeling.latent_vg import PARTS, LatentVG


@dataclass(frozen=True)
class CostReport:
    """Parameters and FLOPs of one model configuration at batch ``batch``."""

    variant: str
    batch: int
    input_size: int
    tokens: dict[str, int]
    params: dict[str, int]  # per part + "total"
    flops: dict[str, int]  # per part + "total" (2 FLOPs per multiply-add)

    @property
    def total_params(self) -> int:
        return self.params["total"]

    @property
    def total_gflops(self) -> float:
        """GFLOPs per batch (multiply-add = 2)."""
        return self.flops["total"] / 1e9

    @property
    def total_gmacs(self) -> float:
        return self.flops["total"] / 2e9

    def to_dict(self) -> dict:
        data = asdict(self)
        data["gflops"] = {k: round(v / 1e9, 3) for k, v in self.flops.items()}
        data["gmacs"] = {k: round(v / 2e9, 3) for k, v in self.flops.items()}
        data["params_m"] = {k: round(v / 1e6, 3) for k, v in self.params.items()}
        data["flop_convention"] = "1 multiply-add = 2 FLOPs; gmacs = multiply-adds; attention matmuls counted"
        return data


def _part_of(child: str) -> str:
    for part, children in PARTS.items():
        if child in children:
            return part
    return "heads"


def count_flops(model_or_cfg: LatentVG | ModelConfig | str, *, batch: int = 1) -> CostReport:
    """Parameters and FLOPs of a model (or of a config / variant name, built on the meta device).

    FLOPs per part: ``backbone`` is the BEiT-3 encoder over the whole sequence (latent tokens included),
    ``latent_expressions`` the latent initializer, the VCI and the latent class-token heads, ``heads`` the
    pixel decoder, the text class-token head, the prediction (Eq. 9) and the GRES head.
    """
    if isinstance(model_or_cfg, str):
        model_or_cfg = get_config(model_or_cfg)
    if isinstance(model_or_cfg, ModelConfig):
        cfg = model_or_cfg.replace(kernel_impl="reference")
        with torch.device("meta"):
            model = LatentVG(cfg)
    else:
        cfg = model_or_cfg.cfg
        with torch.device("meta"):
            model = LatentVG(cfg.replace(kernel_impl="reference"))
    # No autograd state: the counter's module hooks would otherwise track grads of meta tensors.
    model.eval().requires_grad_(False)
    params = model.part_parameters()
    params["total"] = sum(params.values())

    size, text_len = cfg.encoder.img_size, cfg.preprocess.max_text_len
    with torch.device("meta"):
        image = torch.empty(batch, 3, size, size)
        ids = torch.zeros(batch, text_len, dtype=torch.long)
        mask = torch.ones(batch, text_len, dtype=torch.bool)
    counter = FlopCounterMode(display=False, depth=2)
    with counter, torch.no_grad():
        model(image, ids, mask)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    flops = {part: 0 for part in PARTS}
    children_total = 0
    # Counts of a module include its descendants, and modules called through a parent's method (e.g.
    # ``beit3.embed``) appear without the parent: take each outermost recorded module once.
    names = {n for n in counts if n.startswith(root + ".")}
    for name in names:
        if any(name.startswith(other + ".") for other in names):
            continue
        n = sum(counts[name].values())
        flops[_part_of(name.split(".")[1])] += n
        children_total += n
    total = sum(counts.get(root, {}).values())
    flops["heads"] += total - children_total  # ops in LatentVG.forward itself: the Eq. 9 prediction
    flops["total"] = total
    tokens = {
        "vision": cfg.encoder.num_patches + 1,
        "text": text_len,
        "latent": cfg.latent.num_tokens,
        "total": cfg.num_tokens,
    }
    return CostReport(cfg.name, batch, size, tokens, params, flops)

