"""The retrieval reference: spot embeddings and expression of the training sections.

A :class:`Reference` is saved beside the model checkpoint, so prediction needs no training data at
hand. It holds one embedding per training spot (the keys of the top-k search) and, per expression
normalisation ("target"), the spots' normalised expression (the values that are aggregated).

A reference is only meaningful with the model that embedded its spots: :func:`build_reference`
records that model's identity (:func:`model_identity`: a content hash of its weights, its genes,
its embedding size) in ``meta["model"]``, and :meth:`Reference.check_model` refuses any other
model with :class:`~mclstexp.exceptions.ReferenceMismatchError`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import weakref
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mclstexp.exceptions import ReferenceMismatchError

_FORMAT = "mclstexp-reference/1"


#: model -> (what its tensors were when hashed, the hash): hashing a large model's weights takes
#: seconds, and a prediction checks the same model more than once.
_HASHED: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], str]] = weakref.WeakKeyDictionary()


def _weights_sha256(model: Any) -> str:
    """sha256 over the state dict (name, dtype, shape, bytes of each tensor, in name order),
    remembered until a tensor is replaced or modified in place (its version counter moves)."""
    import torch

    state = sorted(model.state_dict().items())
    key = tuple((name, t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for name, t in state)
    hit = _HASHED.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    h = hashlib.sha256()
    for name, tensor in state:
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}\0{t.dtype}\0{tuple(tensor.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy())
    _HASHED[model] = (key, h.hexdigest())
    return _HASHED[model][1]


def model_identity(model: Any, genes: Sequence[str] | None = None) -> dict[str, Any]:
    """What binds a reference to a model: a content hash of the weights, the genes, the embedding
    size.

    Parameters
    ----------
    model
        A :class:`~mclstexp.models.MclSTExp` (any ``torch.nn.Module`` with ``config.embed_dim``).
    genes
        The model's genes when it does not carry them (``model.genes``, set by training and
        :func:`mclstexp.train.load_checkpoint`, wins).

    Returns
    -------
    dict
        ``weights_sha256`` (sha256 over every tensor of the state dict: name, dtype, shape,
        bytes, in name order; the same before and after a save/load round trip), ``genes``
        (list or ``None``) and ``embedding_dim``.

    Examples
    --------
    >>> model_identity(model)["embedding_dim"]  # doctest: +SKIP
    256
    """
    own = getattr(model, "genes", None)
    chosen = own if own is not None else genes
    return {
        "weights_sha256": _weights_sha256(model),
        "genes": None if chosen is None else [str(g) for g in chosen],
        "embedding_dim": int(model.config.embed_dim),
    }


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

    def check_model(
        self, model: Any, *, model_name: str = "the model", reference_name: str = "the reference"
    ) -> None:
        """Refuse a model this reference was not built with (before any patch is embedded).

        Compares the model's :func:`model_identity` with the one recorded in ``meta["model"]``:
        the weights' hash, the genes (names and order) and the embedding size. A reference
        written before references recorded their model is checked on genes and embedding size
        only, with a warning.

        Raises
        ------
        mclstexp.exceptions.ReferenceMismatchError
            What differs, naming ``reference_name`` and ``model_name``.

        Examples
        --------
        >>> ref.check_model(model, model_name="model.pt")  # doctest: +SKIP
        """
        own = model_identity(model)
        problems = []
        if self.embeddings.shape[1] != own["embedding_dim"]:
            problems.append(
                f"embedding size {self.embeddings.shape[1]} (the model's is {own['embedding_dim']})"
            )
        if own["genes"] is not None and list(self.genes) != own["genes"]:
            problems.append(_gene_difference(list(self.genes), own["genes"]))
        recorded = self.meta.get("model")
        if not isinstance(recorded, Mapping) or "weights_sha256" not in recorded:
            warnings.warn(
                f"{reference_name} records no model identity (written by an older mclstexp), so "
                f"it cannot be checked to belong to {model_name}; rebuild it to be sure",
                UserWarning,
                stacklevel=2,
            )
        elif recorded["weights_sha256"] != own["weights_sha256"]:
            theirs, ours = str(recorded["weights_sha256"])[:12], own["weights_sha256"][:12]
            problems.append(
                f"weights: it was built with another model (weights sha256 {theirs}..., "
                f"this model's {ours}...)"
            )
        if problems:
            raise ReferenceMismatchError(
                f"{reference_name} does not belong to {model_name}: {'; '.join(problems)}. Use the "
                "reference.npz written beside that model.pt (mclstexp train and mclstexp run write "
                "both), or rebuild it with that model"
            )

    @classmethod
    def load(cls, path: str | Path) -> Reference:
        """Read a reference written by :meth:`save` (``allow_pickle=False``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(2, "reference file not found", str(path))
        try:
            with np.load(path, allow_pickle=False) as data:
                try:
                    header = json.loads(str(data["header"]))
                    if not isinstance(header, dict) or header.get("format") != _FORMAT:
                        format_ = header.get("format") if isinstance(header, dict) else None
                        raise ValueError(f"{path}: not a {_FORMAT} file (format={format_})")
                    values = {name: data[f"values__{name}"] for name in header["targets"]}
                    embeddings = data["embeddings"]
                except KeyError as err:
                    raise ValueError(f"{path}: incomplete reference file, missing {err}") from None
        except (OSError, EOFError, zipfile.BadZipFile, ValueError) as err:
            if str(err).startswith(str(path)):
                raise
            msg = " ".join(str(err).split())
            raise ValueError(f"{path}: not a readable reference file ({msg})") from err
        try:
            ref = cls(
                embeddings=embeddings,
                values=values,
                genes=header["genes"],
                spot_ids=header["spot_ids"],
                sections=header["sections"],
                meta=header.get("meta", {}),
            )
            _check_finite(ref.embeddings, "embeddings")
            for name, matrix in ref.values.items():
                _check_finite(matrix, f"values[{name!r}]")
            return ref
        except (KeyError, TypeError, ValueError) as err:  # an edited or damaged file
            msg = " ".join(str(err).split())
            raise ValueError(
                f"{path}: not a valid reference ({msg}); rebuild it (mclstexp train writes "
                "reference.npz beside model.pt)"
            ) from err


def _check_finite(matrix: np.ndarray, name: str) -> None:
    """``ValueError`` naming the first NaN or infinite entry of a 2-D array."""
    bad = np.argwhere(~np.isfinite(matrix))
    if bad.size:
        row, col = (int(v) for v in bad[0])
        raise ValueError(
            f"{name}: contains a non-finite value ({matrix[row, col]}) at row {row}, column {col}"
        )


def _gene_difference(reference: list[str], model: list[str]) -> str:
    """One line saying how two gene lists differ."""
    if len(reference) != len(model):
        return f"genes: {len(reference)} in the reference, {len(model)} in the model"
    i = next(i for i, (a, b) in enumerate(zip(reference, model, strict=True)) if a != b)
    return f"genes: gene {i} is {reference[i]!r} in the reference, {model[i]!r} in the model"


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

    identity = model_identity(model, genes=parts[0].genes if parts else None)
    return concatenate_references(
        parts, meta={"package_version": __version__, "model": identity, **(meta or {})}
    )
