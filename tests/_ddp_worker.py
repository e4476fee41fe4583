"""One rank of the two-process gloo DDP test (run by tests/test_train_ddp.py, or alone with
WORLD_SIZE=1 for the single-process reference). Writes its results to OUT/rank<r>.pt."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _model_fixtures import make_sections
from mclstexp.models import MclSTExp, ModelConfig, TrainConfig, clip_loss
from mclstexp.models.inputs import batch_sequences, neighbourhood_groups
from mclstexp.train import distributed as D
from mclstexp.train import train_model

BATCH = 16  # per rank; the single-process reference uses 2 x BATCH


def config(batch_size: int) -> tuple[ModelConfig, TrainConfig]:
    m = ModelConfig(
        backbone="test_efficientnet",
        embed_dim=16,
        n_heads=2,
        head_dim=8,
        sequence_length=8,
        position_rows=10,
        position_cols=10,
    )
    t = TrainConfig(
        epochs=2,
        batch_size=batch_size,
        lr=1e-3,
        weight_decay=1e-3,
        optimizer="adam",
        freeze_backbone=True,
        augment=False,
    )
    return m, t


def main(out: Path) -> None:
    torch.set_num_threads(1)
    info = D.init_from_env("cpu")
    world = info.world_size
    secs = make_sections(2, grid=8, n_genes=12, patch=16)
    m, t = config(BATCH if world > 1 else 2 * BATCH)
    torch.manual_seed(0)
    mm = ModelConfig(**{**m.to_dict(), "n_genes": 12})
    model = MclSTExp(mm)
    model.freeze_backbone()
    n_feat = model.image_encoder.num_features
    feats = [
        np.random.default_rng(10 + i).normal(size=(s.n_obs, n_feat)).astype(np.float32)
        for i, s in enumerate(secs)
    ]
    # 1) one fixed batch of 4 neighbourhood groups: rank r takes groups 2r, 2r+1
    groups = neighbourhood_groups(secs[0].positions, 8)[:4]
    mine = groups if world == 1 else groups[2 * info.rank : 2 * info.rank + 2]
    expr, pos, mask = batch_sequences(mine, secs[0].expression, secs[0].positions)
    net = model if world == 1 else torch.nn.parallel.DistributedDataParallel(model)
    img = torch.from_numpy(feats[0][np.concatenate(mine)])
    a, b, scale = net(img, torch.from_numpy(expr), torch.from_numpy(pos), torch.from_numpy(mask))
    loss = clip_loss(a, b, scale, gather=True)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    # 2) a full (short) training run with frozen features
    result = train_model(
        secs,
        (m, t),
        run_dir=out / f"run{world}",
        device="cpu",
        seed=3,
        frozen_features=feats,
        progress=False,
    )
    torch.save(
        {
            "loss": loss.detach(),
            "grads": grads,
            "history": [h["loss"] for h in result.history],
            "state": result.model.state_dict(),
        },
        out / f"world{world}_rank{info.rank}.pt",
    )
    D.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
