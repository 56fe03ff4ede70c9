"""Class-token heads (Figure 2: the MLPs giving ``t_o`` and ``z_o^i``, paper Eq. 8-9)."""

from __future__ import annotations

from torch import Tensor, nn


class TokenMLP(nn.Module):
    """``(B, d) -> (B, E)``: Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))
