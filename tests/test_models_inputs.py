"""What the spot encoder reads (models/inputs.py): spot arrays from an AnnData, neighbourhood
groups, inference sequences and the batch plan of an epoch."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from _model_fixtures import make_section
from mclstexp.models.inputs import (
    BatchPlan,
    inference_sequences,
    neighbourhood_groups,
    spot_arrays,
)


def test_neighbourhood_groups_are_deterministic_compact_partitions() -> None:
    sec = make_section(0, grid=12)
    g1 = neighbourhood_groups(sec.positions, 16)
    g2 = neighbourhood_groups(sec.positions.copy(), 16)
    assert all(np.array_equal(a, b) for a, b in zip(g1, g2, strict=True))
    allidx = np.sort(np.concatenate(g1))
    assert np.array_equal(allidx, np.arange(sec.n_obs))  # every spot exactly once
    assert {len(g) for g in g1} == {16}  # 144 = 9 x 16
    for g in g1:  # Hilbert runs of 16 on a grid are 4 x 4 blocks
        span = sec.positions[g].max(0) - sec.positions[g].min(0)
        assert (span <= 3).all()
    # uneven n: sizes differ by at most one
    sizes = [len(g) for g in neighbourhood_groups(sec.positions[:50], 16)]
    assert sum(sizes) == 50 and max(sizes) - min(sizes) <= 1
    # batch mode at inference: runs of consecutive spots in file order
    runs = inference_sequences(sec.positions, "batch", 32)
    assert np.array_equal(runs[0], np.arange(32)) and len(runs[-1]) == 144 - 4 * 32


def test_sampler_epochs_ranks_and_modes() -> None:
    pos = [make_section(i, grid=8).positions for i in range(2)]  # 2 x 64 spots
    s = BatchPlan(pos, mode="neighbourhood", batch_size=16, sequence_length=8, seed=1)
    b0, b0_again, b1 = s.batches(0), s.batches(0), s.batches(1)
    flat = lambda bs: np.concatenate([np.concatenate(b) for b in bs])  # noqa: E731
    assert np.array_equal(flat(b0), flat(b0_again))  # deterministic
    assert not np.array_equal(flat(b0), flat(b1))  # reshuffled per epoch
    assert np.array_equal(np.sort(flat(b0)), np.arange(128))
    assert all(len(b) == 2 for b in b0)  # 16 // 8 groups per batch
    # two ranks: disjoint shards whose union is the global epoch
    r = [
        BatchPlan(
            pos,
            mode="neighbourhood",
            batch_size=16,
            sequence_length=8,
            seed=1,
            rank=k,
            world_size=2,
        ).rank_batches(0)
        for k in range(2)
    ]
    assert len(r[0]) == len(r[1]) == 4
    assert np.array_equal(np.sort(np.concatenate([flat(r[0]), flat(r[1])])), np.arange(128))
    # legacy batch mode: one sequence of batch_size random spots pooled over sections
    sb = BatchPlan(pos, mode="batch", batch_size=50, seed=0)
    bb = sb.batches(0)
    assert [len(b) for b in bb] == [1, 1, 1] and [len(b[0]) for b in bb] == [50, 50, 28]
    assert (np.concatenate([b[0] for b in bb]) >= 64).any()  # spans both sections


def test_spot_arrays_check_expression_and_positions() -> None:
    sec = make_section(0, grid=4)
    expr, pos = spot_arrays(sec.adata)
    np.testing.assert_array_equal(expr, sec.expression)
    assert pos.dtype == np.int64 and pos.tolist()[:2] == [[0, 0], [0, 1]]
    bad = sec.adata.copy()
    bad.X[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"section S0: adata\.X has non-finite"):
        spot_arrays(bad)
    bad = sec.adata.copy()
    bad.obs["array_row"] = bad.obs["array_row"].astype(float) - 1
    with pytest.raises(ValueError, match="finite and >= 0"):
        spot_arrays(bad, name="mine")
    with pytest.raises(ValueError, match=r"section mine: adata\.obs lacks"):
        spot_arrays(ad.AnnData(sec.adata.X), name="mine")
