"""The spot encoder: expression + learned position tables -> a small pre-norm Transformer.

method.md §3, exactly::

    h0_i = e_i + Px[u_i] + Py[v_i]                       e_i: normalised expression (R^G)
    h    = h + MHSA(LayerNorm(h))                        8 heads x 64, bias-free QKV G -> 3*512,
    h    = h + FF(LayerNorm(h))                          output 512 -> G; FF: G -> G, GELU, G -> G
    (x 2 blocks; dropout 0; no final LayerNorm)

``u`` is the array column and ``v`` the array row. Attention runs within one sequence: a
``(L, G)`` input is one sequence, a ``(S, L, G)`` input is S independent sequences (padding masked
out with ``mask``). What forms a sequence is decided by the sampler (see
:class:`mclstexp.models.ModelConfig`, ``sequence``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SpotEncoder"]


class Attention(nn.Module):
    """Multi-head self-attention with a bias-free QKV projection and a biased output projection."""

    def __init__(self, dim: int, n_heads: int = 8, head_dim: int = 64, dropout: float = 0.0):
        super().__init__()
        inner = n_heads * head_dim
        self.n_heads = n_heads
        self.head_dim = head_dim
        self.dropout = dropout
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)  # G -> 3*512
        self.to_out = nn.Linear(inner, dim)  # 512 -> G

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        s, length, _ = x.shape  # (S, L, G)
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)  # 3 x (S, L, H*Dh)
        q, k, v = (
            t.view(s, length, self.n_heads, self.head_dim).transpose(1, 2) for t in (q, k, v)
        )
        # (S, H, L, Dh); softmax(q k^T / sqrt(Dh)) v, keys outside the sequence masked out
        attn_mask = None if mask is None else mask[:, None, None, :]  # (S, 1, 1, L) True = keep
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (S, H, L, Dh)
        y = y.transpose(1, 2).reshape(s, length, self.n_heads * self.head_dim)  # (S, L, 512)
        return self.to_out(y)  # (S, L, G)


class FeedForward(nn.Module):
    """``G -> G``, exact GELU, ``G -> G``."""

    def __init__(self, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(x)))))  # (S, L, G)


class Block(nn.Module):
    """Pre-norm Transformer block: ``h + MHSA(LN(h))`` then ``h + FF(LN(h))``."""

    def __init__(self, dim: int, n_heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, n_heads, head_dim, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = h + self.attn(self.norm1(h), mask)  # (S, L, G)
        return h + self.ff(self.norm2(h))  # (S, L, G)


def _normal_rows(rows: int, drawn: int, n_genes: int) -> torch.Tensor:
    """The first ``rows`` rows of a ``(drawn, n_genes)`` N(0, 1) draw (the full draw is made, so
    the random stream advances as for a full table, and then released)."""
    full = torch.randn(drawn, n_genes)
    return full if drawn == rows else full[:rows].clone()


class SpotEncoder(nn.Module):
    """Expression + position embeddings + ``n_blocks`` pre-norm Transformer blocks.

    Parameters
    ----------
    n_genes
        G.
    position_rows
        Rows of Py (indexed by the array row v).
    position_cols
        Rows of Px (indexed by the array column u).
    n_heads, head_dim, n_blocks, dropout
        8, 64, 2, 0 in mclSTExp.
    init_rows, init_cols
        Draw the tables' N(0, 1) initialisation for this many rows (>= the stored rows) and keep
        the first ``position_rows``/``position_cols`` (compact tables, see
        :class:`mclstexp.models.ModelConfig`): the same stored values and random stream as
        full tables.

    Examples
    --------
    >>> enc = SpotEncoder(5, position_rows=10, position_cols=12)
    >>> enc(torch.zeros(7, 5), torch.zeros(7, 2, dtype=torch.long)).shape
    torch.Size([7, 5])
    """

    def __init__(
        self,
        n_genes: int,
        *,
        position_rows: int,
        position_cols: int,
        n_heads: int = 8,
        head_dim: int = 64,
        n_blocks: int = 2,
        dropout: float = 0.0,
        init_rows: int = 0,
        init_cols: int = 0,
    ) -> None:
        super().__init__()
        if n_genes < 1 or position_rows < 1 or position_cols < 1:
            raise ValueError(
                "SpotEncoder needs n_genes, position_rows and position_cols >= 1, got "
                f"{n_genes}, {position_rows}, {position_cols}"
            )
        self.n_genes = n_genes
        # Px: (U, G), Py: (V, G), N(0, 1); compact tables keep the first rows of the full draw
        self.pos_x = nn.Parameter(
            _normal_rows(position_cols, max(init_cols, position_cols), n_genes)
        )
        self.pos_y = nn.Parameter(
            _normal_rows(position_rows, max(init_rows, position_rows), n_genes)
        )
        self.blocks = nn.ModuleList(
            Block(n_genes, n_heads, head_dim, dropout) for _ in range(n_blocks)
        )

    def forward(
        self,
        expression: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed spots.

        Parameters
        ----------
        expression
            ``(L, G)`` (one sequence) or ``(S, L, G)`` (S sequences), normalised expression.
        positions
            Integer ``(..., 2)`` = ``(array_row, array_col)`` = ``(v, u)``; clamped to the tables.
        mask
            Optional bool ``(S, L)``, True for real spots (padding is never attended to).

        Returns
        -------
        torch.Tensor
            Contextualised spot features, same shape as ``expression``.
        """
        single = expression.dim() == 2
        if single:
            expression, positions = expression.unsqueeze(0), positions.unsqueeze(0)
            if mask is not None:
                mask = mask.unsqueeze(0)
        if expression.shape[-1] != self.n_genes:
            raise ValueError(
                f"expression has {expression.shape[-1]} genes, the model was built for "
                f"{self.n_genes}"
            )
        positions = positions.long()
        v = positions[..., 0].clamp(0, self.pos_y.shape[0] - 1)  # (S, L) array row
        u = positions[..., 1].clamp(0, self.pos_x.shape[0] - 1)  # (S, L) array column
        h = expression + self.pos_x[u] + self.pos_y[v]  # (S, L, G)
        for block in self.blocks:
            h = block(h, mask)  # (S, L, G)
        return h.squeeze(0) if single else h
