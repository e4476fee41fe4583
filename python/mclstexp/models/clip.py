"""``MclSTExp``: the image encoder, the spot encoder and their projection heads in one model.

The model returns features; the loss lives in :mod:`mclstexp.models.loss`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mclstexp.models.config import ModelConfig
from mclstexp.models.heads import ProjectionHead
from mclstexp.models.image_encoder import ImageEncoder
from mclstexp.models.spot_encoder import SpotEncoder
from mclstexp.models.stages import FrontOutput

__all__ = ["MclSTExp"]


class MclSTExp(nn.Module):
    """mclSTExp (method.md §3): image branch and spot branch projected to a shared space.

    Parameters
    ----------
    config
        The architecture; ``n_genes``, ``position_rows`` and ``position_cols`` must be set (the
        trainer sets them from the data).

    Examples
    --------
    >>> cfg = ModelConfig(backbone="test_resnet", n_genes=6, position_rows=4, position_cols=4,
    ...                   embed_dim=8)
    >>> model = MclSTExp(cfg)
    >>> img = torch.zeros(3, 32, 32, 3, dtype=torch.uint8)
    >>> a, b, scale = model(img, torch.zeros(3, 6), torch.zeros(3, 2, dtype=torch.long))
    >>> a.shape, b.shape, float(scale)
    (torch.Size([3, 8]), torch.Size([3, 8]), 1.0)
    """

    genes: list[str]  # set by the trainer / load_checkpoint

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.n_genes < 1 or config.position_rows < 1 or config.position_cols < 1:
            raise ValueError(
                "ModelConfig.n_genes, position_rows and position_cols must be set (>= 1) to build "
                f"the model, got {config.n_genes}, {config.position_rows}, {config.position_cols}"
            )
        self.config = config
        self.genes = []
        self.image_encoder = ImageEncoder.from_config(config)
        for p in (p for m in self.image_encoder.front_modules() for p in m.parameters()):
            p.requires_grad_(False)  # the frozen front of a partially trained backbone
        self.spot_encoder = SpotEncoder(
            config.n_genes,
            position_rows=config.position_rows,
            position_cols=config.position_cols,
            n_heads=config.n_heads,
            head_dim=config.head_dim,
            n_blocks=config.n_blocks,
            dropout=config.attention_dropout,
            init_rows=config.position_init_rows,
            init_cols=config.position_init_cols,
        )
        self.spot_head = ProjectionHead(config.n_genes, config.embed_dim, config.head_dropout)
        log_scale = torch.tensor(math.log(config.logit_scale))
        if config.learn_logit_scale:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_logit_scale", log_scale)

    @property
    def logit_scale(self) -> torch.Tensor:
        """1 / tau."""
        return self.log_logit_scale.exp()

    def freeze_backbone(self) -> None:
        """Freeze the image backbone (frozen-encoder mode): no gradients, always eval mode."""
        for p in self.image_encoder.backbone.parameters():
            p.requires_grad_(False)
        self._backbone_frozen = True
        self.image_encoder.backbone.eval()

    def train(self, mode: bool = True) -> MclSTExp:
        super().train(mode)
        if getattr(self, "_backbone_frozen", False):
            self.image_encoder.backbone.eval()
        for module in self.image_encoder.front_modules():
            module.eval()  # a frozen front keeps its batch-norm statistics
        return self

    def encode_images(self, images: torch.Tensor | FrontOutput) -> torch.Tensor:
        """Image embeddings ``(N, D)``; 2-D float input = precomputed backbone features, a
        :class:`~mclstexp.models.stages.FrontOutput` = a frozen front's cached output."""
        if isinstance(images, FrontOutput):
            return self.image_encoder(images)
        if images.dim() == 2:
            return self.image_encoder.project(images.float())  # (N, F) -> (N, D)
        return self.image_encoder(images)  # (N, D)

    def encode_spots(
        self,
        expression: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Spot embeddings ``(N, D)``: one sequence ``(L, G)`` or ``S`` sequences ``(S, L, G)``.

        With ``mask`` (``(S, L)`` bool) only real spots are returned, row-major.
        """
        h = self.spot_encoder(expression, positions, mask)  # (S, L, G) or (L, G)
        if mask is not None:
            h = h[mask]  # (N, G)
        elif h.dim() == 3:
            h = h.reshape(-1, h.shape[-1])  # (S*L, G)
        return self.spot_head(h)  # (N, D)

    def forward(
        self,
        images: torch.Tensor | FrontOutput,
        expression: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embed paired images and spots.

        Parameters
        ----------
        images
            ``(N, H, W, 3)`` uint8 / ``(N, 3, H, W)`` patches, ``(N, F)`` backbone features, or
            a frozen front's output (:class:`~mclstexp.models.stages.FrontOutput`).
        expression
            ``(N, G)`` (one sequence) or ``(S, L, G)`` with ``mask`` selecting the N real spots.
        positions
            Integer ``(..., 2)`` = ``(array_row, array_col)``.
        mask
            Optional ``(S, L)`` bool.

        Returns
        -------
        tuple
            ``(image_embeddings (N, D), spot_embeddings (N, D), logit_scale)``.
        """
        image_emb = self.encode_images(images)
        spot_emb = self.encode_spots(expression, positions, mask)
        if image_emb.shape[0] != spot_emb.shape[0]:
            raise ValueError(
                f"{image_emb.shape[0]} images but {spot_emb.shape[0]} spots: they must be paired"
            )
        return image_emb, spot_emb, self.logit_scale
