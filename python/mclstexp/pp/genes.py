"""Gene selection over (training) sections, and the public gene panels shipped in the package.

Selections are computed from the sections given, only: pass the training sections of a fold so the
held-out section never influences the panel. Every returned gene is present in every section.

Shipped panels (gene names only, in the original method's order):

``"her2st_785"`` (alias ``"her2st"``)
    The 785-gene panel of the original method for HER2+ breast cancer (``her_hvg_cut_1000``).
``"cscc_171"`` (alias ``"cscc"``)
    The 171-gene panel for cSCC (``skin_hvg_cut_1000``).
``"visium_685"`` (alias ``"visium"``)
    The 685-gene panel for the 10x Visium breast set (``1000hvg_common``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from mclstexp import _keys as K
from mclstexp.exceptions import DataWarning

PANELS: dict[str, str] = {
    "her2st_785": "her2st_785.txt",
    "cscc_171": "cscc_171.txt",
    "visium_685": "visium_685.txt",
}
_ALIASES = {"her2st": "her2st_785", "cscc": "cscc_171", "visium": "visium_685"}
Method = Literal["panel", "heg", "hvg"]


def list_panels() -> list[str]:
    """Names of the panels shipped with the package.

    Examples
    --------
    >>> list_panels()
    ['cscc_171', 'her2st_785', 'visium_685']
    """
    return sorted(PANELS)


def _parse_panel_text(text: str, source: str) -> list[str]:
    genes = [ln.strip() for ln in text.splitlines()]
    genes = [g for g in genes if g and not g.startswith("#")]
    if not genes:
        raise ValueError(f"{source}: the panel file lists no genes (expected one name per line)")
    seen: set[str] = set()
    dupes = sorted({g for g in genes if g in seen or seen.add(g)})  # type: ignore[func-returns-value]
    if dupes:
        raise ValueError(f"{source}: duplicated genes {dupes[:10]}; list each gene once")
    return genes


def load_panel(name: str | os.PathLike[str]) -> list[str]:
    """Load a gene panel: a shipped panel by name, or a text file with one gene per line.

    Parameters
    ----------
    name
        ``"her2st_785"``/``"her2st"``, ``"cscc_171"``/``"cscc"``, ``"visium_685"``/``"visium"``,
        or the path of a text file (one gene per line; blank lines and ``#`` comments ignored).

    Returns
    -------
    list of str
        Gene names in the panel's order.

    Examples
    --------
    >>> genes = load_panel("her2st")
    >>> len(genes), genes[:2]
    (785, ['HPS6', 'TNC'])
    """
    if isinstance(name, str) and not name.endswith(".txt"):
        key = _ALIASES.get(name, name)
        if key not in PANELS:
            raise ValueError(
                f"name: unknown panel {name!r}; shipped panels: {list_panels()} "
                f"(aliases {sorted(_ALIASES)}), or pass the path of a text file"
            )
        text = resources.files("mclstexp").joinpath("data", "panels", PANELS[key]).read_text()
        return _parse_panel_text(text, f"panel {key}")
    path = Path(name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: panel file not found (one gene name per line)")
    return _parse_panel_text(path.read_text(encoding="utf-8"), str(path))


def _as_list(adatas: AnnData | Sequence[AnnData]) -> list[AnnData]:
    if isinstance(adatas, AnnData):
        return [adatas]
    out = list(adatas)
    if not out:
        raise ValueError("adatas: no sections given")
    for a in out:
        if not isinstance(a, AnnData):
            raise TypeError(f"adatas: expected AnnData objects, got {type(a).__name__}")
    return out


def _name(a: AnnData, i: int) -> str:
    sid = K.section_id(a, default="")
    return f"section {sid!r}" if sid else f"section #{i}"


def _common_genes(adatas: list[AnnData]) -> list[str]:
    for i, a in enumerate(adatas):
        if not a.var_names.is_unique:
            raise ValueError(
                f"{_name(a, i)}: var_names are not unique; call adata.var_names_make_unique()"
            )
    common = set(adatas[0].var_names)
    for a in adatas[1:]:
        common &= set(a.var_names)
    return [g for g in adatas[0].var_names if g in common]


def _normalised(a: AnnData, genes: list[str]) -> sp.csr_matrix:
    """log1p(1e4 * counts / library size) of ``genes`` (the package's default normalisation)."""
    raw = a.layers.get(K.LAYER_COUNTS, a.X)
    x = sp.csr_matrix(raw, dtype=np.float64)
    if K.LIBRARY_SIZE in a.obs:
        lib = np.asarray(a.obs[K.LIBRARY_SIZE], dtype=np.float64)
    else:
        lib = np.asarray(x.sum(axis=1)).ravel()
    x = x[:, a.var_names.get_indexer(genes)]
    if x.nnz and (x.data.min() < 0 or not np.all(np.isfinite(x.data))):
        raise ValueError("adatas: counts must be finite and non-negative raw counts")
    scale = np.divide(1e4, lib, out=np.zeros_like(lib), where=lib > 0)
    x = sp.csr_matrix(sp.diags(scale) @ x)
    x.data = np.log1p(x.data)
    return x


def select_genes(
    adatas: AnnData | Sequence[AnnData],
    *,
    method: Method = "panel",
    n_genes: int | None = None,
    panel: str | os.PathLike[str] | Sequence[str] | None = None,
) -> list[str]:
    """Choose the genes to model, from the given (training) sections only.

    Parameters
    ----------
    adatas
        The training sections (raw counts in ``X`` or ``layers["counts"]``).
    method
        ``"panel"``: the genes of ``panel`` present in every section, in the panel's order
        (absent genes are dropped with a :class:`~mclstexp.exceptions.DataWarning` naming them).
        ``"heg"``: the ``n_genes`` genes with the highest mean normalised expression
        (``log1p(1e4 * c / library_size)``) over all spots of the sections.
        ``"hvg"``: the ``n_genes`` genes with the highest variance of normalised expression
        within sections (the mean of per-section variances, so differences between sections do
        not count as variability).
    n_genes
        Number of genes for ``"heg"``/``"hvg"`` (required there); for ``"panel"`` an optional cap
        (the first ``n_genes`` panel genes present).
    panel
        For ``"panel"``: a shipped panel name, a text file, or a list of genes.

    Returns
    -------
    list of str
        Gene names present in every section; ``"heg"``/``"hvg"`` in decreasing order of the score
        (ties by name).

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> a = ad.AnnData(np.array([[5.0, 0.0, 1.0], [3.0, 1.0, 0.0]], dtype=np.float32))
    >>> a.var_names = ["A", "B", "C"]
    >>> select_genes([a], method="heg", n_genes=2)
    ['A', 'B']
    """
    sections = _as_list(adatas)
    common = _common_genes(sections)
    if not common:
        raise ValueError("adatas: the sections share no gene; check their var_names")
    if n_genes is not None and (
        isinstance(n_genes, bool) or not isinstance(n_genes, int | np.integer) or n_genes < 1
    ):
        raise ValueError(f"n_genes: expected a positive integer, got {n_genes!r}")

    if method == "panel":
        if panel is None:
            raise ValueError("panel: method='panel' needs panel= (a panel name, file or gene list)")
        label = "panel"
        if isinstance(panel, str | os.PathLike):
            wanted, label = load_panel(panel), f"panel {str(panel)!r}"
        else:
            wanted = [str(g) for g in panel]
            if len(set(wanted)) != len(wanted):
                raise ValueError("panel: duplicated gene names; list each gene once")
        present = set(common)
        kept = [g for g in wanted if g in present]
        absent = [g for g in wanted if g not in present]
        if not kept:
            raise ValueError(
                f"{label}: none of the {len(wanted)} panel genes is present in every section "
                f"(e.g. {wanted[:5]}); check gene naming (symbols vs Ensembl ids)"
            )
        if absent:
            warnings.warn(
                f"{label}: {len(absent)} of {len(wanted)} panel genes are absent from at least one "
                f"section and were left out (e.g. {absent[:10]})",
                DataWarning,
                stacklevel=2,
            )
        return kept[:n_genes] if n_genes is not None else kept

    if method not in ("heg", "hvg"):
        raise ValueError(f"method: expected 'panel', 'heg' or 'hvg', got {method!r}")
    if n_genes is None:
        raise ValueError(f"n_genes: method={method!r} needs the number of genes to select")
    if panel is not None:
        raise ValueError("panel: only used with method='panel'")
    total_n = 0
    sums = np.zeros(len(common))
    var_sum = np.zeros(len(common))
    for a in sections:
        x = _normalised(a, common)
        n = x.shape[0]
        if n == 0:
            continue
        s1 = np.asarray(x.sum(axis=0)).ravel()
        s2 = np.asarray(x.multiply(x).sum(axis=0)).ravel()
        sums += s1
        mean = s1 / n
        var_sum += np.maximum(s2 / n - mean * mean, 0.0)
        total_n += n
    if total_n == 0:
        raise ValueError("adatas: the sections have no spots")
    score = sums / total_n if method == "heg" else var_sum / len(sections)
    order = np.lexsort((np.asarray(common), -score))
    return [common[i] for i in order[: min(n_genes, len(common))]]
