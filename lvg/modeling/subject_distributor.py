"""Subject distributor (Figure 2: "SD", paper Eq. 3).

After every encoder layer but the last (whose latent outputs feed nothing) each latent expression's subject slot is overwritten with the visual subject
token ``s_V`` (position 0 of the vision stream), so all expressions keep pointing at the same subject.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SubjectDistributor(nn.Module):
    """Parameter-free: writes ``s_V`` into the subject slot of every latent expression."""

    def __init__(self, lengths: tuple[int, ...]) -> None:
        super().__init__()
        starts, pos = [], 0
        for k in lengths:
            starts.append(pos + 1)  # [z_cls, s, a_1..a_k]: the subject sits right after the class token
            pos += k + 2
        self.register_buffer("slots", torch.tensor(starts, dtype=torch.long), persistent=False)
        self.num_tokens = pos

    def forward(self, latent: Tensor, s_v: Tensor) -> Tensor:
        """latent ``(B, sum(k+2), d)``, s_v ``(B, d)`` -> latent with subject slots replaced."""
        # index_copy keeps the op out-of-place (autograd-safe) and shape-static for export.
        src = s_v[:, None, :].expand(-1, self.slots.numel(), -1)
        return latent.index_copy(1, self.slots, src)
