"""Compact position tables: the rows training can reach, with the outputs of the full tables."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from _model_fixtures import make_sections
from mclstexp.models import load_preset
from mclstexp.tl.embed import embed_spots
from mclstexp.train import train_model


def _train(tmp_path, name: str, compact: bool):
    sections = make_sections(3, grid=6, patch=24)
    model_cfg, train_cfg = load_preset("cpu_legacy")
    model_cfg = dataclasses.replace(
        model_cfg,
        backbone="test_resnet",
        position_rows=4096,
        position_cols=4096,
        compact_positions=compact,
    )
    train_cfg = dataclasses.replace(train_cfg, epochs=3, batch_size=16, grad_clip=1.0)
    result = train_model(
        sections, (model_cfg, train_cfg), run_dir=tmp_path / name, device="cpu", progress=False
    )
    return result, sections


def test_compact_tables_train_exactly_as_the_full_tables(tmp_path) -> None:
    dense, sections = _train(tmp_path, "dense", compact=False)
    compact, _ = _train(tmp_path, "compact", compact=True)
    cfg = compact.model_config
    # grid 6, margin 8: rows 0..13 stored of 4096; the configured size is kept for the draw
    assert (cfg.position_rows, cfg.position_init_rows) == (14, 4096)
    assert (cfg.position_cols, cfg.position_init_cols) == (14, 4096)
    d_state, c_state = dense.model.state_dict(), compact.model.state_dict()
    for name, value in c_state.items():
        if name.startswith("spot_encoder.pos_"):
            torch.testing.assert_close(value, d_state[name][: value.shape[0]], rtol=0, atol=0)
        else:
            torch.testing.assert_close(value, d_state[name], rtol=0, atol=0)
    for section in sections:
        np.testing.assert_array_equal(
            embed_spots(compact.model, section, device="cpu"),
            embed_spots(dense.model, section, device="cpu"),
        )
    n_dense = sum(p.numel() for p in dense.model.parameters())
    n_compact = sum(p.numel() for p in compact.model.parameters())
    assert n_dense - n_compact == 2 * (4096 - 14) * cfg.n_genes
    assert [h["loss"] for h in compact.history] == [h["loss"] for h in dense.history]
