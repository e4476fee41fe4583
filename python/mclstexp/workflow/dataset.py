"""What the main job runs on: the sections (raw counts + slides), tiling and gene settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from anndata import AnnData

from mclstexp import _keys
from mclstexp._keys import section_id

#: her2st sections that have H&E images in the public data we test with.
HER2ST_IMAGE_SECTIONS = ("C2", "C3", "C4", "C5", "C6")


@dataclass
class DatasetSpec:
    """Sections to run on and the data-dependent settings of the job.

    Attributes
    ----------
    name
        ``"synthetic"`` or ``"her2st"`` (used in run names and tables).
    sections
        One AnnData per section with RAW counts (the readers' contract).
    gene_method, n_genes, panel
        How genes are selected from the training sections (:func:`mclstexp.pp.select_genes`).
    patch_size
        Patch edge in pixels at the slide's native resolution.
    """

    name: str
    sections: list[AnnData]
    gene_method: str = "hvg"
    n_genes: int | None = None
    panel: str | None = None
    patch_size: int = 224
    notes: list[str] = field(default_factory=list)

    @property
    def section_names(self) -> list[str]:
        """Section ids in order."""
        return [section_id(a) for a in self.sections]

    def section(self, name: str) -> AnnData:
        """The AnnData of section ``name``."""
        for adata in self.sections:
            if section_id(adata) == name:
                return adata
        raise ValueError(f"section: {name!r} is not in the dataset (has {self.section_names})")


def load_dataset(
    name: str = "synthetic",
    *,
    root: str | Path | None = None,
    sections: Sequence[str] | None = None,
    seed: int = 0,
    n_sections: int | None = None,
    n_spots: int | None = None,
) -> DatasetSpec:
    """Load a dataset for the main job.

    Parameters
    ----------
    name
        ``"synthetic"`` (the embedded default, generated deterministically from ``seed``) or
        ``"her2st"`` (a local copy of the public data; ``root`` is its ``her2st`` folder or the
        ``data`` folder inside it).
    root
        Where the data are (her2st) or where the synthetic slides are cached.
    sections
        Section ids (her2st default: the sections with images, C2-C6).
    seed, n_sections, n_spots
        Synthetic data only: generator seed, number of sections and spots per section (default:
        the generator's).

    Returns
    -------
    DatasetSpec

    Examples
    --------
    >>> spec = load_dataset("synthetic")  # doctest: +SKIP
    >>> spec.section_names  # doctest: +SKIP
    ['S1', 'S2', 'S3', 'S4']
    """
    if name == "synthetic":
        from mclstexp.datasets import synthetic

        sizes = {"n_sections": n_sections, "n_spots": n_spots}
        adatas = synthetic(root, seed=seed, **{k: v for k, v in sizes.items() if v is not None})
        patch = int(adatas[0].uns[_keys.UNS].get("patch_size", 64))
        if sections is not None:
            adatas = [a for a in adatas if section_id(a) in set(sections)]
        return DatasetSpec(name="synthetic", sections=adatas, gene_method="all", patch_size=patch)
    if name == "her2st":
        if root is None:
            raise ValueError(
                "root: the her2st job needs the data folder, e.g. --root ../shared/data/her2st"
            )
        from mclstexp.io import read_her2st

        chosen = list(sections) if sections else list(HER2ST_IMAGE_SECTIONS)
        adatas = [read_her2st(root, s) for s in chosen]
        return DatasetSpec(
            name="her2st",
            sections=adatas,
            gene_method="panel",
            panel="her2st_785",
            patch_size=224,
        )
    raise ValueError(f"dataset: unknown dataset {name!r}; choose 'synthetic' or 'her2st'")
