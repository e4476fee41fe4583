"""Gene panels shipped in the package and gene selection (panel / HEG / HVG) against oracles."""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from mclstexp import _keys as K
from mclstexp.exceptions import DataWarning
from mclstexp.pp import load_panel, select_genes
from mclstexp.pp.genes import list_panels


@pytest.mark.realdata
def test_shipped_panels_match_the_originals(shared_data: Path) -> None:
    genes = shared_data / "genes"
    her = np.load(genes / "her_hvg_cut_1000.npy", allow_pickle=False).tolist()
    assert load_panel("her2st_785") == her and load_panel("her2st") == her
    # trusted test data in the original's formats (an object array and a pickled pandas Index)
    skin = np.load(genes / "skin_hvg_cut_1000.npy", allow_pickle=True).tolist()
    assert load_panel("cscc_171") == [str(g) for g in skin]
    visium = pd.read_pickle(genes / "1000hvg_common.pkl")
    assert load_panel("visium") == [str(g) for g in visium]


def test_panel_names_and_files(tmp_path: Path) -> None:
    assert list_panels() == ["cscc_171", "her2st_785", "visium_685"]
    assert [len(load_panel(p)) for p in list_panels()] == [171, 785, 685]
    f = tmp_path / "mine.txt"
    f.write_text("# my genes\nA\n\nB \n")
    assert load_panel(f) == ["A", "B"]
    assert load_panel(str(f)) == ["A", "B"]
    with pytest.raises(ValueError, match="unknown panel 'her3'"):
        load_panel("her3")
    with pytest.raises(FileNotFoundError, match="panel file not found"):
        load_panel(tmp_path / "none.txt")
    f.write_text("A\nA\n")
    with pytest.raises(ValueError, match="duplicated"):
        load_panel(f)
    f.write_text("\n")
    with pytest.raises(ValueError, match="no genes"):
        load_panel(f)


def _section(counts: np.ndarray, genes: list[str], name: str) -> ad.AnnData:
    a = ad.AnnData(counts.astype(np.float32), var=pd.DataFrame(index=genes))
    a.uns[K.UNS] = {K.UNS_SECTION: name}
    return a


@pytest.fixture
def sections() -> list[ad.AnnData]:
    rng = np.random.default_rng(0)
    genes = [f"g{i:02d}" for i in range(30)]
    out = []
    for s in range(3):
        c = rng.poisson(rng.uniform(0.1, 20, size=30), size=(40, 30)).astype(np.float64)
        c[5] = 0  # a zero-count spot
        # drop one gene per section so only the intersection is eligible
        keep = [g for i, g in enumerate(genes) if i != 25 + s]
        out.append(_section(c[:, [genes.index(g) for g in keep]], keep, f"S{s}"))
    return out


def test_heg_matches_a_dense_oracle(sections: list[ad.AnnData]) -> None:
    common = [g for g in sections[0].var_names if all(g in a.var_names for a in sections[1:])]
    # library sizes over ALL genes of each section, as the package does
    dense = np.vstack(
        [
            np.log1p(
                1e4
                * np.divide(
                    a[:, common].X,
                    a.X.sum(axis=1, keepdims=True),
                    out=np.zeros((a.n_obs, len(common))),
                    where=a.X.sum(axis=1, keepdims=True) > 0,
                )
            )
            for a in sections
        ]
    )
    mean = dense.mean(axis=0)
    expected = [common[i] for i in np.argsort(-mean, kind="stable")[:10]]
    got = select_genes(sections, method="heg", n_genes=10)
    assert got == expected
    assert all(g not in got for g in ("g25", "g26", "g27"))


def test_hvg_uses_within_section_variance(sections: list[ad.AnnData]) -> None:
    got = select_genes(sections, method="hvg", n_genes=8)
    common = [g for g in sections[0].var_names if all(g in a.var_names for a in sections[1:])]
    var = np.zeros(len(common))
    for a in sections:
        lib = a.X.sum(axis=1, keepdims=True)
        x = np.log1p(
            1e4
            * np.divide(a[:, common].X, lib, out=np.zeros((a.n_obs, len(common))), where=lib > 0)
        )
        var += x.var(axis=0)
    assert got == [common[i] for i in np.argsort(-var / len(sections), kind="stable")[:8]]


def test_hvg_ignores_a_between_section_shift() -> None:
    rng = np.random.default_rng(1)
    secs = []
    for s, level in enumerate([1, 50]):
        c = rng.poisson(5.0, size=(50, 6)).astype(np.float64)
        c[:, 0] = level  # constant within a section, very different between sections
        c[:, 1] = rng.poisson(rng.choice([0.5, 40], size=50))  # truly variable within sections
        secs.append(_section(c, [f"g{i}" for i in range(6)], f"S{s}"))
    assert select_genes(secs, method="hvg", n_genes=1) == ["g1"]
    assert "g0" not in select_genes(secs, method="hvg", n_genes=3)


def test_panel_method_keeps_panel_order_and_reports_absent_genes(
    sections: list[ad.AnnData],
) -> None:
    assert select_genes(sections, panel=["g03", "g01", "g02"]) == ["g03", "g01", "g02"]
    assert select_genes(sections, panel=["g03", "g01", "g02"], n_genes=2) == ["g03", "g01"]
    with pytest.warns(DataWarning, match=r"2 of 3 panel genes are absent .*g25.*g99"):
        assert select_genes(sections, panel=["g25", "g01", "g99"]) == ["g01"]
    with pytest.raises(ValueError, match="none of the 2 panel genes"):
        select_genes(sections, panel=["x", "y"])


def test_a_panel_file_of_absent_genes_is_named(sections: list[ad.AnnData], tmp_path: Path) -> None:
    """Regression (sweep #127): ``mclstexp train --genes FILE`` with none of its genes in the data
    said "panel: none of the 2 panel genes ..." without naming the file."""
    path = tmp_path / "genes_missing.txt"
    path.write_text("NOT_A_GENE\nNOR_THIS\n")
    with pytest.raises(ValueError, match=r"panel '\S*genes_missing\.txt': none of the 2 panel"):
        select_genes(sections, panel=path)
    path.write_text("g01\nNOR_THIS\n")
    with pytest.warns(DataWarning, match=r"panel '\S*genes_missing\.txt': 1 of 2 panel genes"):
        select_genes(sections, panel=path)


@pytest.mark.realdata
def test_her2st_panel_is_complete_on_the_real_sections(shared_data: Path) -> None:
    from mclstexp.io import read_her2st

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        secs = [read_her2st(shared_data / "her2st", s, image=False) for s in ("B1", "C3", "H2")]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        genes = select_genes(secs, method="panel", panel="her2st")
    assert genes == load_panel("her2st")
    heg = select_genes(secs, method="heg", n_genes=50)
    assert len(heg) == 50 and len(set(heg)) == 50
    assert all(all(g in a.var_names for a in secs) for g in heg)


def test_selection_uses_only_the_given_sections(sections: list[ad.AnnData]) -> None:
    train = sections[:2]
    before = select_genes(train, method="heg", n_genes=5)
    # a held-out section dominated by one low gene changes the pooled ranking...
    test = sections[2].copy()
    test.X = test.X.copy()
    low = select_genes(train, method="heg", n_genes=30)[-1]
    test.X[:, list(test.var_names).index(low)] = 1e5
    assert low in select_genes([*train, test], method="heg", n_genes=5)
    # ...but the training-only selection never sees it
    assert select_genes(train, method="heg", n_genes=5) == before
    assert low not in before


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"method": "heg"}, ValueError, "n_genes"),
        ({"method": "hvg", "n_genes": 0}, ValueError, "n_genes"),
        ({"method": "panel"}, ValueError, "panel="),
        ({"method": "pca", "n_genes": 3}, ValueError, "method"),
        ({"method": "heg", "n_genes": 3, "panel": "her2st"}, ValueError, "panel"),
    ],
)
def test_bad_arguments(sections: list[ad.AnnData], kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        select_genes(sections, **kwargs)


def test_bad_sections() -> None:
    with pytest.raises(ValueError, match="no sections"):
        select_genes([], method="heg", n_genes=2)
    with pytest.raises(TypeError, match="AnnData"):
        select_genes([np.zeros((2, 2))], method="heg", n_genes=2)  # type: ignore[list-item]
    a = _section(np.ones((2, 2)), ["A", "B"], "S0")
    b = _section(np.ones((2, 2)), ["C", "D"], "S1")
    with pytest.raises(ValueError, match="share no gene"):
        select_genes([a, b], method="heg", n_genes=1)
    dup = ad.AnnData(np.ones((2, 2), dtype=np.float32))
    dup.var_names = ["A", "A"]
    with pytest.raises(ValueError, match="not unique"):
        select_genes([dup], method="heg", n_genes=1)
