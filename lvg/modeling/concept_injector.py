"""Visual concept injector (Figure 2: "VCI", paper Eq. 4-7).

Per layer its own ``N_c`` concept tokens (orthogonal init). The math runs through ``lvg.kernels``, whose
implementation (PyTorch reference or Triton) is chosen once when the model is built.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lvg.config import LatentConfig
from lvg.kernels import VCIFn


class ConceptInjector(nn.Module):
    """Replaces the attribute tokens of all latent expressions with concept-attended ones (Eq. 7)."""

    def __init__(self, cfg: LatentConfig, dim: int, vci: VCIFn) -> None:
        super().__init__()
        self.rule, self.topk = cfg.threshold, cfg.topk
        self.concepts = nn.Parameter(torch.empty(cfg.num_concepts, dim))
        if cfg.concept_init == "orthogonal":
            nn.init.orthogonal_(self.concepts)
        else:
            nn.init.normal_(self.concepts, std=dim**-0.5)
        self._vci = vci
        self.register_buffer("attr_index", torch.tensor(cfg.attribute_slots, dtype=torch.long), persistent=False)

    def forward(self, patches: Tensor, t_cls: Tensor, latent: Tensor) -> tuple[Tensor, Tensor]:
        """patches ``(B, n, d)``, t_cls ``(B, d)``, latent ``(B, sum(k+2), d)``.

        Returns the updated latent tokens and the target-patch mask ``(B, n)`` bool.
        """
        attrs = latent.index_select(1, self.attr_index)  # (B, Na, d): A~ of Eq. 6
        out = self._vci(patches, t_cls, attrs, self.concepts.to(patches.dtype), rule=self.rule, topk=self.topk)
        return latent.index_copy(1, self.attr_index, out.attrs.to(latent.dtype)), out.mask
