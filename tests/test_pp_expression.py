"""normalize_expression: the three flavours against hand-computed oracles, zeros, bad input."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mclstexp import _keys as K
from mclstexp.exceptions import DataWarning
from mclstexp.pp import normalize_expression

COUNTS = np.array(
    [
        [1, 3, 0, 6],
        [0, 0, 0, 4],  # zero over the panel (g0, g1, g2) but not over all genes
        [2, 2, 5, 1],
        [0, 0, 0, 0],  # zero over everything
    ],
    dtype=np.float32,
)


def _adata(counts: np.ndarray = COUNTS) -> ad.AnnData:
    a = ad.AnnData(
        sp.csr_matrix(counts),
        obs=pd.DataFrame(index=[f"s{i}" for i in range(counts.shape[0])]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(counts.shape[1])]),
    )
    a.obsm[K.SPATIAL] = np.arange(2 * counts.shape[0], dtype=np.float64).reshape(-1, 2)
    a.uns[K.UNS] = {K.UNS_SECTION: "T1", K.UNS_SLIDE_PATH: None, K.UNS_MPP: None}
    return a


PANEL = ["g2", "g0", "g1"]  # deliberately not in file order


def test_default_flavor_uses_all_gene_library_then_subsets() -> None:
    a = _adata()
    with pytest.warns(DataWarning, match=r"1 of 4 spots .*zero counts over all genes.*s3"):
        b = normalize_expression(a, genes=PANEL)
    assert b is not None
    lib = COUNTS.sum(axis=1).astype(np.float64)
    expected = np.zeros((4, 3))
    for i in range(4):
        if lib[i] > 0:
            expected[i] = np.log1p(1e4 * COUNTS[i, [2, 0, 1]] / lib[i])
    assert b.X.dtype == np.float32 and isinstance(b.X, np.ndarray)
    np.testing.assert_allclose(b.X, expected, rtol=1e-6)
    assert list(b.var_names) == PANEL
    np.testing.assert_array_equal(b.layers[K.LAYER_COUNTS].toarray(), COUNTS[:, [2, 0, 1]])
    assert sp.issparse(b.layers[K.LAYER_COUNTS])
    np.testing.assert_array_equal(b.obs[K.LIBRARY_SIZE], lib)
    info = b.uns[K.UNS][K.UNS_NORMALIZATION]
    assert info["flavor"] == "default" and info["n_zero_spots"] == 1
    assert b.uns[K.UNS][K.UNS_SECTION] == "T1"
    np.testing.assert_array_equal(b.obsm[K.SPATIAL], a.obsm[K.SPATIAL])
    assert not np.isnan(b.X).any()
    # the input is untouched
    np.testing.assert_array_equal(a.X.toarray(), COUNTS)


def test_default_flavor_prefers_the_source_library_size() -> None:
    a = _adata()
    a.obs[K.LIBRARY_SIZE] = [100.0, 50.0, 20.0, 10.0]  # the source file had more genes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = normalize_expression(a, genes=["g0"])
    np.testing.assert_allclose(b.X[:, 0], np.log1p(1e4 * COUNTS[:, 0] / a.obs[K.LIBRARY_SIZE]))


def test_legacy_spot_flavor() -> None:
    with pytest.warns(DataWarning, match=r"2 of 4 spots .*panel genes.*s1, s3"):
        b = normalize_expression(_adata(), genes=PANEL, flavor="legacy_spot")
    sub = COUNTS[:, [2, 0, 1]].astype(np.float64)
    tot = sub.sum(axis=1)
    expected = np.zeros_like(sub)
    expected[tot > 0] = np.log10(1 + 1e4 * sub[tot > 0] / tot[tot > 0, None])
    np.testing.assert_allclose(b.X, expected, rtol=1e-6)
    assert b.uns[K.UNS][K.UNS_NORMALIZATION]["n_zero_spots"] == 2


def test_legacy_gene_flavor_divides_by_the_gene_total() -> None:
    counts = COUNTS.copy()
    counts[:, 1] = 0  # a gene absent from the section
    with pytest.warns(DataWarning, match=r"1 of 3 genes .*g1"):
        b = normalize_expression(_adata(counts), genes=PANEL, flavor="legacy_gene")
    sub = counts[:, [2, 0, 1]].astype(np.float64)
    tot = sub.sum(axis=0)
    expected = np.zeros_like(sub)
    expected[:, tot > 0] = np.log10(1 + 1e4 * sub[:, tot > 0] / tot[tot > 0])
    np.testing.assert_allclose(b.X, expected, rtol=1e-6)
    assert b.uns[K.UNS][K.UNS_NORMALIZATION]["n_zero_genes"] == 1


def test_all_genes_when_genes_is_none_and_copy_false_works_in_place() -> None:
    a = _adata(COUNTS[:3])
    assert normalize_expression(a, copy=False) is None
    assert a.shape == (3, 4) and a.X.dtype == np.float32
    np.testing.assert_array_equal(a.layers[K.LAYER_COUNTS].toarray(), COUNTS[:3])
    # a second call normalises from the counts layer, not from the already-normalised X
    b = normalize_expression(a, genes=["g3"])
    np.testing.assert_allclose(b.X[:, 0], np.log1p(1e4 * COUNTS[:3, 3] / COUNTS[:3].sum(1)))


@pytest.mark.parametrize(
    ("mutate", "kwargs", "match"),
    [
        (lambda c: c.__setitem__((0, 0), -1), {}, "negative"),
        (lambda c: c.__setitem__((0, 0), np.nan), {}, "NaN"),
        (None, {"genes": ["g0", "nope"]}, r"absent .*nope.*select_genes"),
        (None, {"genes": ["g0", "g0"]}, "duplicated"),
        (None, {"genes": []}, "empty"),
        (None, {"flavor": "cpm"}, "flavor"),
        (None, {"target_sum": 0}, "target_sum"),
    ],
)
def test_bad_input_raises_clear_errors(mutate, kwargs, match) -> None:  # type: ignore[no-untyped-def]
    counts = COUNTS.copy()
    if mutate is not None:
        mutate(counts)
    with pytest.raises(ValueError, match=match):
        normalize_expression(_adata(counts), **kwargs)


def test_views_work_with_copy_and_are_refused_in_place() -> None:
    a = _adata()
    view = a[:3, ["g0", "g3"]]
    b = normalize_expression(view)
    assert b.shape == (3, 2) and not b.is_view
    np.testing.assert_allclose(
        b.X[:, 1], np.log1p(1e4 * COUNTS[:3, 3] / COUNTS[:3][:, [0, 3]].sum(1)), rtol=1e-6
    )
    with pytest.raises(ValueError, match="view"):
        normalize_expression(view, copy=False)


def test_genes_as_a_single_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="genes"):
        normalize_expression(_adata(), genes="g0")  # type: ignore[arg-type]


def test_error_names_the_section() -> None:
    with pytest.raises(ValueError, match="section 'T1'"):
        normalize_expression(_adata(), genes=["zzz"])
