"""Embeddings (tl/embed.py): spots in the training sequences, from an AnnData or a section."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _model_fixtures import make_sections  # noqa: E402
from mclstexp.models import MclSTExp, ModelConfig  # noqa: E402
from mclstexp.models.inputs import neighbourhood_groups  # noqa: E402
from mclstexp.tl.embed import embed_patches, embed_spots  # noqa: E402

torch.set_num_threads(1)


def tiny_model(**kw: object) -> ModelConfig:
    base = dict(backbone="test_efficientnet", embed_dim=32, sequence_length=10, n_heads=2)
    base.update(head_dim=16, **kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sections():
    return make_sections(1)


def test_embed_spots_uses_the_training_sequences(sections) -> None:
    torch.manual_seed(0)
    cfg = tiny_model(n_genes=12, position_rows=20, position_cols=20)
    model = MclSTExp(cfg).eval()
    sec = sections[0]
    emb = embed_spots(model, sec)
    groups = neighbourhood_groups(sec.positions, cfg.sequence_length)
    g = groups[3]
    with torch.no_grad():
        direct = model.encode_spots(
            torch.from_numpy(sec.expression[g]), torch.from_numpy(sec.positions[g])
        )
    np.testing.assert_allclose(emb[g], direct.numpy(), atol=1e-5)
    # perturb one spot: its group changes, other groups do not
    ad2 = sec.adata.copy()
    ad2.X[g[0]] += np.random.default_rng(0).normal(size=12).astype(np.float32)
    emb2 = embed_spots(model, ad2)
    others = np.setdiff1d(np.arange(sec.n_obs), g)
    assert np.abs(emb2[g[1:]] - emb[g[1:]]).max() > 1e-4
    np.testing.assert_array_equal(emb2[others], emb[others])
    # and the result does not depend on how many sequences go through at once
    np.testing.assert_allclose(embed_spots(model, sec, sequences_per_batch=1), emb, atol=1e-5)


def test_embed_spots_takes_an_anndata_or_a_section_alike(sections) -> None:
    torch.manual_seed(0)
    model = MclSTExp(tiny_model(n_genes=12, position_rows=20, position_cols=20)).eval()
    sec = sections[0]
    np.testing.assert_array_equal(embed_spots(model, sec), embed_spots(model, sec.adata))
    with pytest.raises(ValueError, match="genes"):
        embed_spots(model, sec.adata[:, :5].copy())
    assert embed_patches(model, sec.patches[:3]).shape == (3, 32)
