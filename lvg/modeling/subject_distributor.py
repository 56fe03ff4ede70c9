"""Subject distributor (Figure 2: "SD", paper Eq. 3).

After every encoder layer but the last (whose latent outputs feed nothing) each latent expression's subject
slot is overwritten with the visual subject token ``s_V`` (position 0 of the vision stream), so all
expressions keep pointing at the same subject.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lvg.config import LatentConfig


class SubjectDistributor(nn.Module):
    """Parameter-free: writes ``s_V`` into the subject slot of every latent expression."""

    def __init__(self, cfg: LatentConfig) -> None:
        super().__init__()
        self.register_buffer("slots", torch.tensor(cfg.subject_slots, dtype=torch.long), persistent=False)

    def forward(self, latent: Tensor, s_v: Tensor) -> Tensor:
        """latent ``(B, sum(k+2), d)``, s_v ``(B, d)`` -> latent with subject slots replaced."""
        # index_copy keeps the op out-of-place (autograd-safe) and shape-static for export.
        src = s_v[:, None, :].expand(-1, self.slots.numel(), -1)
        return latent.index_copy(1, self.slots, src)
