"""Visual concept injector (Figure 2: "VCI", paper Eq. 4-7).

Per layer its own ``N_c`` concept tokens (orthogonal init). The math runs through ``lvg.kernels``, whose
implementation (PyTorch reference or Triton) is chosen once when the model is built.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lvg.config import LatentConfig
from lvg.kernels import VCIFn


class ConceptInjector(nn.Module):
    """Replaces the attribute tokens of all latent expressions with concept-attended ones (Eq. 7)."""

    def __init__(self, cfg: LatentConfig, dim: int, vci: VCIFn, eps: float = 1e-5) -> None:
        super().__init__()
        self.rule, self.topk = cfg.threshold, cfg.topk
        self.concepts = nn.Parameter(torch.empty(cfg.num_concepts, dim))
        if cfg.concept_init == "orthogonal":
            nn.init.orthogonal_(self.concepts)
        else:
            nn.init.normal_(self.concepts, std=dim**-0.5)
        self._vci = vci
        # cfg.vci_norm: a LayerNorm on the patches and on the attribute tokens, so the two softmaxes see
        # unit-scale tokens whatever the residual stream's norm; the affine gains are the learned temperature
        # of their dot products. The text class token only sets the mean-rule threshold, which no scale of it
        # changes and no gradient reaches.
        self.norms = (
            nn.ModuleDict({k: nn.LayerNorm(dim, eps=eps) for k in ("patches", "attributes")})
            if cfg.vci_norm else None
        )
        # cfg.concept_gain: in log space, so it stays positive and moves by ratios; a scalar, so no weight decay.
        self.log_concept_gain = nn.Parameter(torch.tensor(math.log(cfg.concept_gain))) if cfg.concept_gain > 0 else None
        self.register_buffer("attr_index", torch.tensor(cfg.attribute_slots, dtype=torch.long), persistent=False)

    def vci_inputs(self, patches: Tensor, latent: Tensor) -> tuple[Tensor, Tensor]:
        """The patches ``(B, n, d)`` and attribute tokens ``(B, Na, d)`` (A~ of Eq. 6) the VCI's softmaxes read."""
        attrs = latent.index_select(1, self.attr_index)
        if self.norms is not None:
            # The new attribute tokens are then mixtures of normalised patches: the next layer's pre-norm
            # reads them at the scale it reads any token.
            patches, attrs = self.norms["patches"](patches), self.norms["attributes"](attrs)
        return patches, attrs

    def concept_tokens(self) -> Tensor:
        """The concept tokens ``C`` ``(N_c, d)`` of Eq. 5, with their gain when the config has one."""
        return self.concepts if self.log_concept_gain is None else self.concepts * self.log_concept_gain.exp()

    def forward(self, patches: Tensor, t_cls: Tensor, latent: Tensor) -> tuple[Tensor, Tensor]:
        """patches ``(B, n, d)``, t_cls ``(B, d)``, latent ``(B, sum(k+2), d)``.

        Returns the updated latent tokens and the target-patch mask ``(B, n)`` bool.
        """
        patches, attrs = self.vci_inputs(patches, latent)
        out = self._vci(patches, t_cls, attrs, self.concept_tokens().to(patches.dtype), rule=self.rule, topk=self.topk)
        return latent.index_copy(1, self.attr_index, out.attrs.to(latent.dtype)), out.mask
