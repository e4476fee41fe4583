"""The retrieval reference: spot embeddings and expression of the training sections.

A :class:`Reference` is saved beside the model checkpoint, so prediction needs no training data at
hand. It holds one embedding per training spot (the keys of the top-k search) and, per expression
normalisation ("target"), the spots' normalised expression (the values that are aggregated).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_FORMAT = "mclstexp-reference/1"


@dataclass
class Reference:
    """Keys and values of the top-k retrieval.

    Attributes
    ----------
    embeddings
        float32 [N, D] raw (unnormalised) spot embeddings of the training spots.
    values
        Target name -> float32 [N, G] normalised expression of the same spots.
    genes
        The G gene names (columns of every value matrix).
    spot_ids, sections
        Identity of each reference spot.
    meta
        Provenance (model preset, sequence mode, package version...), JSON-serialisable.

    Examples
    --------
    >>> ref = Reference(
    ...     embeddings=np.eye(3, dtype=np.float32),
    ...     values={"default": np.ones((3, 2), np.float32)},
    ...     genes=["A", "B"],
    ...     spot_ids=["s1", "s2", "s3"],
    ...     sections=["S", "S", "S"],
    ... )
    >>> len(ref)
    3
    """

    embeddings: np.ndarray
    values: dict[str, np.ndarray]
    genes: list[str]
    spot_ids: list[str]
    sections: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        if self.embeddings.ndim != 2:
            raise ValueError(f"embeddings: expected a 2-D array, got shape {self.embeddings.shape}")
        n = self.embeddings.shape[0]
        if len(self.spot_ids) != n or len(self.sections) != n:
            raise ValueError(
                f"spot_ids/sections: expected {n} entries (one per embedding), got "
                f"{len(self.spot_ids)} and {len(self.sections)}"
            )
        for name, matrix in list(self.values.items()):
            matrix = np.ascontiguousarray(matrix, dtype=np.float32)
            if matrix.shape != (n, len(self.genes)):
                raise ValueError(
                    f"values[{name!r}]: expected shape {(n, len(self.genes))}, got {matrix.shape}"
                )
            self.values[name] = matrix

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def save(self, path: str | Path) -> Path:
        """Write the reference as one ``.npz`` file (no pickle) and return its path.

        Examples
        --------
        >>> import tempfile, os
        >>> ref = Reference(np.eye(2, dtype=np.float32), {"t": np.ones((2, 1))}, ["G"],
        ...                 ["a", "b"], ["S", "S"])
        >>> p = ref.save(os.path.join(tempfile.mkdtemp(), "reference.npz"))
        >>> len(Reference.load(p))
        2
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "format": _FORMAT,
            "genes": list(self.genes),
            "spot_ids": list(self.spot_ids),
            "sections": list(self.sections),
            "targets": sorted(self.values),
            "meta": self.meta,
        }
        arrays = {f"values__{name}": matrix for name, matrix in self.values.items()}
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, header=np.array(json.dumps(header)), embeddings=self.embeddings, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Reference:
        """Read a reference written by :meth:`save` (``allow_pickle=False``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(2, "reference file not found", str(path))
        with np.load(path, allow_pickle=False) as data:
            try:
                header = json.loads(str(data["header"]))
                if header.get("format") != _FORMAT:
                    raise ValueError(
                        f"{path}: not a {_FORMAT} file (format={header.get('format')})"
                    )
                values = {name: data[f"values__{name}"] for name in header["targets"]}
                embeddings = data["embeddings"]
            except KeyError as err:
                raise ValueError(f"{path}: incomplete reference file, missing {err}") from None
        return cls(
            embeddings=embeddings,
            values=values,
            genes=header["genes"],
            spot_ids=header["spot_ids"],
            sections=header["sections"],
            meta=header.get("meta", {}),
        )


def concatenate_references(
    parts: Sequence[Reference], *, meta: Mapping[str, Any] | None = None
) -> Reference:
    """Stack references of several sections (same genes and targets) into one.

    Examples
    --------
    >>> a = Reference(np.zeros((1, 2), np.float32), {"t": np.zeros((1, 1))}, ["G"], ["a"], ["S1"])
    >>> b = Reference(np.ones((2, 2), np.float32), {"t": np.ones((2, 1))}, ["G"], ["b", "c"],
    ...               ["S2"] * 2)
    >>> len(concatenate_references([a, b]))
    3
    """
    if not parts:
        raise ValueError("parts: need at least one reference")
    genes, targets = parts[0].genes, sorted(parts[0].values)
    for part in parts[1:]:
        if part.genes != genes or sorted(part.values) != targets:
            raise ValueError("parts: every reference must have the same genes and targets")
    return Reference(
        embeddings=np.concatenate([p.embeddings for p in parts]),
        values={t: np.concatenate([p.values[t] for p in parts]) for t in targets},
        genes=list(genes),
        spot_ids=[s for p in parts for s in p.spot_ids],
        sections=[s for p in parts for s in p.sections],
        meta=dict(meta or parts[0].meta),
    )


def build_reference(
    model: Any,
    sections: Sequence[Any],
    *,
    values: Mapping[str, Sequence[np.ndarray]],
    genes: Sequence[str] | None = None,
    device: str = "auto",
    meta: Mapping[str, Any] | None = None,
) -> Reference:
    """Embed the training spots with the spot branch and pair them with their expression.

    Parameters
    ----------
    model
        A trained :class:`mclstexp.models.MclSTExp`.
    sections
        The training sections as :class:`mclstexp.train.TrainingSection` (normalised model input,
        positions; the same attention sequences as in training are built by ``embed_spots``).
    values
        Target name -> one float [n_obs, G] matrix per section (the values to aggregate).
    genes
        Gene names (default: the first section's ``var_names``).

    Returns
    -------
    Reference

    Examples
    --------
    >>> ref = build_reference(model, train_sections, values={"default": mats})  # doctest: +SKIP
    """
    from mclstexp.tl.embed import embed_spots

    parts = []
    for i, section in enumerate(sections):
        adata = section.adata
        parts.append(
            Reference(
                embeddings=embed_spots(model, section, device=device),
                values={name: np.asarray(mats[i]) for name, mats in values.items()},
                genes=list(genes if genes is not None else adata.var_names),
                spot_ids=[str(s) for s in adata.obs_names],
                sections=[str(section.name)] * adata.n_obs,
            )
        )
    from mclstexp import __version__

    return concatenate_references(parts, meta={"package_version": __version__, **(meta or {})})
