"""HEST-Benchmark tasks on disk: splits, genes, and each sample's expression aligned to its patches.

Layout of one task folder (the Hugging Face dataset ``MahmoodLab/hest-bench``; written by
``create_benchmark_data`` / ``create_splits`` in ``src/hest/HESTData.py`` and read by
``predict_single_split`` / ``predict_folds`` in ``src/hest/bench/benchmark.py`` of
github.com/mahmoodlab/HEST at commit afd42c3)::

    <task>/var_50genes.json          {"genes": [50 gene symbols]}
    <task>/splits/train_<i>.csv      columns sample_id, patches_path, expr_path (paths relative
    <task>/splits/test_<i>.csv       to the task folder), one row per sample; i = 0 .. K-1
    <task>/patches/<id>.h5           HEST patch files (see :mod:`mclstexp.io.hest`)
    <task>/adata/<id>.h5ad           the sample's counts (HEST's aligned_adata.h5ad)
    <task>/patches_vis/<id>.png      (not read)

Splits are by patient (``create_splits``: one test group per patient, or patients distributed
over K groups). HEST's harness aligns the expression to the patches by barcode
(``load_adata(expr_path, genes, barcodes)`` = ``adata[barcodes][:, genes]``): a spot without a
patch is not used. :func:`read_hest_sample` does the same.

Tasks (``bench_config/bench_config.yaml`` and the README table): IDC, PRAD, PAAD, SKCM, COAD,
READ, CCRCC, LUNG, LYMPH_IDC (and HCC, listed in the config but in no published table).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from mclstexp.io.hest import HestPatches, check_hest_patches, read_hest_patches

__all__ = ["HEST_BENCH_TASKS", "HestTask", "read_hest_sample", "read_hest_task"]

#: The nine HEST-Benchmark tasks of the published leaderboard (folder names on the hub).
HEST_BENCH_TASKS = ("IDC", "PRAD", "PAAD", "SKCM", "COAD", "READ", "CCRCC", "LUNG", "LYMPH_IDC")
_SPLIT = re.compile(r"^(train|test)_(\d+)\.csv$")
_COLUMNS = ("sample_id", "patches_path", "expr_path")


@dataclass(frozen=True)
class HestTask:
    """One HEST-Benchmark task as shipped.

    Attributes
    ----------
    name, root
        The task (folder name) and its folder.
    genes
        The task's target genes (``var_50genes.json``), in file order.
    splits
        ``[(train sample ids, test sample ids), ...]`` for ``i = 0 .. K-1``.
    patches_path, expr_path
        Sample id -> its patch file and expression file.
    """

    name: str
    root: Path
    genes: list[str]
    splits: list[tuple[list[str], list[str]]]
    patches_path: dict[str, Path] = field(default_factory=dict)
    expr_path: dict[str, Path] = field(default_factory=dict)

    @property
    def samples(self) -> list[str]:
        """Every sample of the task, in order of first appearance in the splits."""
        seen: dict[str, None] = {}
        for train, test in self.splits:
            seen.update(dict.fromkeys([*train, *test]))
        return list(seen)


def _read_split(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable split CSV ({err})") from err
    missing = [c for c in _COLUMNS if c not in df]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; HEST split files have {_COLUMNS}")
    if df.empty:
        raise ValueError(f"{path}: the split lists no sample")
    return df


def read_hest_task(
    root: str | os.PathLike[str], task: str, *, gene_list: str = "var_50genes.json"
) -> HestTask:
    """Read a HEST-Benchmark task folder: genes, splits and sample files (nothing heavy).

    Parameters
    ----------
    root
        The benchmark folder holding one folder per task (or the task folder itself).
    task
        Task name, e.g. ``"IDC"``.
    gene_list
        The gene file (HEST's ``--gene_list``, default ``var_50genes.json``).

    Examples
    --------
    >>> task = read_hest_task("hest_bench", "IDC")  # doctest: +SKIP
    >>> len(task.genes), len(task.splits)  # doctest: +SKIP
    (50, 2)
    """
    base = Path(root).expanduser()
    folder = base if base.name == task and (base / "splits").is_dir() else base / task
    if not (folder / "splits").is_dir():
        have = sorted(p.parent.name for p in base.glob("*/splits"))
        raise FileNotFoundError(
            f"{folder}: no HEST-Benchmark task {task!r} here (no splits/ folder; tasks found: "
            f"{have}); download it with mclstexp.datasets.hest_bench(tasks=[{task!r}])"
        )
    genes = _read_genes(folder / gene_list)
    found: dict[tuple[str, int], Path] = {}
    for p in (folder / "splits").iterdir():
        m = _SPLIT.match(p.name)
        if m:
            found[(m.group(1), int(m.group(2)))] = p
    n = 1 + max((i for _, i in found), default=-1)
    absent = [f"{k}_{i}.csv" for i in range(n) for k in ("train", "test") if (k, i) not in found]
    if n == 0 or absent:
        raise ValueError(
            f"{folder / 'splits'}: expected train_<i>.csv and test_<i>.csv for i = 0..K-1; "
            f"missing {absent or ['train_0.csv', 'test_0.csv']}"
        )
    splits, patches, exprs = [], {}, {}
    for i in range(n):
        pair = []
        for kind in ("train", "test"):
            df = _read_split(found[(kind, i)])
            for sid, pp, ep in df[list(_COLUMNS)].itertuples(index=False):
                patches[sid], exprs[sid] = folder / pp, folder / ep
            pair.append(list(df["sample_id"]))
        if set(pair[0]) & set(pair[1]):
            raise ValueError(f"{folder}: split {i} has samples in both train and test")
        splits.append((pair[0], pair[1]))
    return HestTask(task, folder, genes, splits, patches, exprs)


def _read_genes(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the task's gene list is missing")
    try:
        genes = json.loads(path.read_text())["genes"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f'{path}: expected a JSON object {{"genes": [...]}} ({err})') from err
    if not isinstance(genes, list) or not genes or len(set(genes)) != len(genes):
        raise ValueError(f"{path}: 'genes' must be a non-empty list of unique gene names")
    return [str(g) for g in genes]


def read_hest_sample(
    task: HestTask, sample_id: str, *, check: bool = True
) -> tuple[AnnData, HestPatches]:
    """One sample of a task: its expression restricted to and ordered like its patches, and the
    patches' index (HEST's ``adata[barcodes]``).

    The AnnData follows the package contract (:func:`mclstexp.io.read_h5ad`: raw counts,
    ``obsm["spatial"]`` spot centres, ``obs["library_size"]`` over all the file's genes) with
    ``uns["mclstexp"]["section"]`` = ``sample_id``; every task gene must be a gene of the file.
    With ``check``, the patches are checked against the spots (:func:`check_hest_patches`).

    Examples
    --------
    >>> adata, patches = read_hest_sample(task, "TENX95")  # doctest: +SKIP
    >>> list(adata.obs_names) == list(patches.barcodes)  # doctest: +SKIP
    True
    """
    from mclstexp.io.h5ad import read_h5ad

    if sample_id not in task.expr_path:
        raise ValueError(f"sample_id: {sample_id!r} is not in task {task.name} ({task.samples})")
    adata = read_h5ad(task.expr_path[sample_id], section=sample_id)
    patches = read_hest_patches(task.patches_path[sample_id])
    if check:
        check_hest_patches(patches, adata)
    missing = [g for g in task.genes if g not in adata.var_names]
    if missing:
        raise ValueError(
            f"{task.expr_path[sample_id]}: {len(missing)} task gene(s) are not in the file "
            f"(e.g. {missing[:5]})"
        )
    pos = pd.Index(map(str, adata.obs_names)).get_indexer(patches.barcodes)
    if (pos < 0).any():
        raise ValueError(f"{patches.path}: barcodes that are not spots of {sample_id}")
    out = adata[np.asarray(pos)].copy()
    out.uns["mclstexp"]["hest_patches"] = str(patches.path)
    return out, patches
