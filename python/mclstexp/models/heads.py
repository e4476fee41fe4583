"""The projection head shared by both branches (method.md §3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProjectionHead"]


class ProjectionHead(nn.Module):
    """``t = W1 x + b1``; ``z = LayerNorm(t + dropout(W2 GELU(t) + b2))``.

    Parameters
    ----------
    in_dim
        Input features (backbone features for images, G for spots).
    out_dim
        Embedding size D (256).
    dropout
        0 in mclSTExp, 0.1 in BLEEP.

    Examples
    --------
    >>> head = ProjectionHead(10, 4)
    >>> head(torch.zeros(3, 10)).shape
    torch.Size([3, 4])
    """

    def __init__(self, in_dim: int, out_dim: int = 256, dropout: float = 0.0) -> None:
        super().__init__()
        self.projection = nn.Linear(in_dim, out_dim)  # W1, b1
        self.fc = nn.Linear(out_dim, out_dim)  # W2, b2
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.projection(x)  # (..., D)
        z = self.dropout(self.fc(F.gelu(t)))  # (..., D)
        return self.layer_norm(t + z)  # (..., D)
