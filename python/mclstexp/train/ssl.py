"""Self-supervised pre-training of the trained stages on the training patches (no expression).

Before the contrastive stage, :func:`ssl_pretrain` trains the backbone's trained stages (a
partially trained backbone with a stage cache, :mod:`mclstexp.models.stages`) with a SimCLR
objective on the training sections' own patches: two views of a patch (two different rotations
or flips of its cached front, each cut to a random crop of the front's map) are pulled together
and pushed away from the other patches of the batch (NT-Xent). A small projector (F -> 256 ->
128) sits on the pooled, standardised features during this stage and is discarded afterwards.

Only the run's sections are read (:attr:`TrainingRun.fronts`, built from the training sections
by :func:`mclstexp.train.setup_training`); the fold runner passes the training sections only,
so a held-out section's pixels never enter this stage.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mclstexp.models.stages import FrontOutput

__all__ = ["nt_xent", "ssl_pretrain"]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: row ``i`` of ``z1`` and of ``z2`` are a positive pair, every other row of
    both is a negative (cosine similarities over ``temperature``).

    Examples
    --------
    >>> z = torch.eye(4)
    >>> bool(nt_xent(z, z, 0.1) < nt_xent(z, z.roll(1, 0), 0.1))
    True
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, d)
    b = z1.shape[0]
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(logits, target)


def _crop(acts: torch.Tensor, gen: torch.Generator, fraction: float) -> torch.Tensor:
    """One random square crop (``fraction`` of the edge, at least 1) of a batch of maps."""
    h, w = acts.shape[-2:]
    c = max(1, round(fraction * min(h, w)))
    y = int(torch.randint(0, h - c + 1, (1,), generator=gen))
    x = int(torch.randint(0, w - c + 1, (1,), generator=gen))
    return acts[..., y : y + c, x : x + c]


def ssl_pretrain(run: Any, *, progress: bool = False) -> list[dict[str, Any]]:
    """SimCLR pre-training of ``run.model``'s trained stages on ``run.fronts`` for
    ``run.train_config.ssl_epochs`` epochs (batch ``batch_size``, AdamW at ``lr``, temperature
    ``ssl_temperature``, crops of ``ssl_crop`` of the front's map). Returns one record per
    epoch (mean loss, seconds). Deterministic in ``run.seed``."""
    tcfg = run.train_config
    enc = run.model.image_encoder
    if run.fronts is None or enc.staged is None:
        raise ValueError("ssl_epochs needs a partially trained backbone with stage_cache")
    acts = torch.cat([f.activations for f in run.fronts], 1)  # (V, N, C, h, w) float16
    means = torch.cat([f.means for f in run.fronts], 1)  # (V, N, F_front)
    n_views, n = acts.shape[:2]
    seed = np.random.SeedSequence([run.seed, 7]).generate_state(1, np.uint64)[0]
    gen = torch.Generator().manual_seed(int(seed) % 2**63)
    projector = nn.Sequential(nn.Linear(enc.num_features, 256), nn.ReLU(), nn.Linear(256, 128))
    with torch.no_grad():
        for layer in (projector[0], projector[2]):
            layer.weight.copy_(
                torch.randn(layer.weight.shape, generator=gen) * layer.in_features**-0.5
            )
            layer.bias.zero_()
    projector.to(run.device)
    params = [p for p in enc.backbone.parameters() if p.requires_grad] + list(
        projector.parameters()
    )
    opt = torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    batch = max(2, min(tcfg.batch_size, n))
    history = []
    enc.train()
    for epoch in range(tcfg.ssl_epochs):
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        losses = []
        for s in range(0, n - 1, batch):
            ids = order[s : s + batch]
            if len(ids) < 2:
                break
            v1 = torch.randint(0, n_views, (len(ids),), generator=gen)
            v2 = (v1 + torch.randint(1, max(n_views, 2), (len(ids),), generator=gen)) % n_views
            z = []
            for v in (v1, v2):
                maps = _crop(acts[v, ids], gen, tcfg.ssl_crop).float().to(run.device)
                feats = enc.staged.back(FrontOutput(maps, means[v, ids].to(run.device)))
                z.append(projector(enc.standardize(feats)))
            loss = nt_xent(z[0], z[1], tcfg.ssl_temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        history.append(
            {
                "ssl_epoch": epoch + 1,
                "loss": float(np.mean(losses)),
                "seconds": round(time.perf_counter() - t0, 3),
            }
        )
        if progress:
            print(f"ssl epoch {epoch + 1}/{tcfg.ssl_epochs}: loss {history[-1]['loss']:.4f}")
    return history
