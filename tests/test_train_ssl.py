"""Self-supervised pre-training: it learns on a tiny set and never reads a held-out section."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import mclstexp.train.ssl as ssl_module
from _model_fixtures import make_sections
from mclstexp.models import load_preset
from mclstexp.models.config import Preset
from mclstexp.train.setup import setup_training
from mclstexp.train.ssl import nt_xent, ssl_pretrain


def _preset(**train):
    model_cfg, train_cfg = load_preset("cpu")
    model_cfg = dataclasses.replace(
        model_cfg, backbone="test_resnet", trained_stages=1, sequence_length=4
    )
    train_cfg = dataclasses.replace(
        train_cfg, freeze_backbone=False, stage_cache=True, batch_size=16, **train
    )
    return model_cfg, train_cfg


def test_nt_xent_prefers_matching_pairs() -> None:
    z = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    assert nt_xent(z, z + 0.01, 0.2) < nt_xent(z, z.roll(2, 0), 0.2)


def test_ssl_loss_decreases_on_a_tiny_set(tmp_path) -> None:
    sections = make_sections(3, grid=6, patch=32)
    torch.manual_seed(0)
    run = setup_training(
        sections,
        _preset(ssl_epochs=12, lr=3e-3),
        run_dir=tmp_path / "r",
        device="cpu",
        progress=False,
    )
    before = [p.detach().clone() for p in run.model.spot_encoder.parameters()]
    history = ssl_pretrain(run)
    losses = [h["loss"] for h in history]
    assert len(losses) == 12 and np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05
    # only the image side learns in this stage
    for p, q in zip(run.model.spot_encoder.parameters(), before, strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="stage_cache"):
        model_cfg, train_cfg = _preset(ssl_epochs=1)
        setup_training(
            sections,
            (model_cfg, dataclasses.replace(train_cfg, stage_cache=False)),
            run_dir=tmp_path / "bad",
            device="cpu",
            progress=False,
        )


@pytest.mark.slow
def test_the_fold_runner_pretrains_on_training_sections_only(tmp_path, monkeypatch) -> None:
    from mclstexp.workflow import load_dataset, run_fold
    from mclstexp.workflow.experiment import tile_dataset

    dataset = load_dataset("synthetic", root=tmp_path / "syn", n_sections=3, n_spots=30)
    caches = tile_dataset(dataset, tmp_path / "patches", progress=False)
    seen = []
    real = ssl_module.ssl_pretrain

    def spy(run, **kw):
        seen.append(
            (
                [s.name for s in run.sections],
                sum(int(f.activations.shape[1]) for f in run.fronts),
            )
        )
        return real(run, **kw)

    monkeypatch.setattr(ssl_module, "ssl_pretrain", spy)
    model_cfg, train_cfg = load_preset("cpu")
    preset = Preset(
        dataclasses.replace(model_cfg, trained_stages=1, sequence_length=4),
        dataclasses.replace(
            train_cfg,
            freeze_backbone=False,
            stage_cache=True,
            ssl_epochs=1,
            epochs=1,
            batch_size=16,
            patch_size=dataset.patch_size,
        ),
    )
    held_out = dataset.section_names[1]
    run_fold(
        dataset,
        caches,
        test_sections=[held_out],
        preset=preset,
        preset_name="ssl",
        fold_dir=tmp_path / "fold",
        device="cpu",
        k=5,
        baselines=False,
        progress=False,
    )
    train_names = [n for n in dataset.section_names if n != held_out]
    assert seen == [(train_names, 60)]
