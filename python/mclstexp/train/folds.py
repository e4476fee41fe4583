"""Cross-validation folds as plain data: leave-one-section-out and leave-one-patient-out.

The one fold implementation: the main job (:func:`mclstexp.workflow.run_experiment`,
``mclstexp run --holdout``) and ``mclstexp train --holdout`` take their folds from here. A
:class:`Fold` names its training, validation and test sections; folds serialise to JSON-ready
dicts. The same arguments (and seed) always give the same folds. No torch import here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mclstexp import _keys as K


@dataclass(frozen=True)
class Fold:
    """One cross-validation split.

    Parameters
    ----------
    name
        A readable id (``"section=A1"``, ``"patient=B"``).
    train
        Section ids used to fit the model (and as the retrieval reference).
    test
        Held-out section ids, evaluated one by one.
    val
        Section ids held out of ``train`` for model selection (empty by default).

    Examples
    --------
    >>> f = Fold("section=A1", train=("A2", "B1"), test=("A1",))
    >>> Fold.from_dict(f.to_dict()) == f
    True
    """

    name: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    val: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for part in ("train", "test", "val"):
            value = getattr(self, part)
            if isinstance(value, str):
                raise TypeError(f"Fold.{part}: expected a sequence of section ids, got a string")
            object.__setattr__(self, part, tuple(str(s) for s in value))
        if not self.test:
            raise ValueError(f"Fold {self.name!r}: no test section")
        if not self.train:
            raise ValueError(f"Fold {self.name!r}: no training section")
        parts = (set(self.train), set(self.test), set(self.val))
        if parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2]:
            raise ValueError(f"Fold {self.name!r}: train, val and test sections must not overlap")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists of section ids)."""
        return {
            "name": self.name,
            "train": list(self.train),
            "val": list(self.val),
            "test": list(self.test),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fold:
        """Rebuild a fold from :meth:`to_dict` output (``val`` optional)."""
        missing = [k for k in ("name", "train", "test") if k not in data]
        if missing:
            raise ValueError(f"Fold.from_dict: missing keys {missing} (need name, train, test)")
        return cls(
            name=str(data["name"]),
            train=tuple(data["train"]),
            test=tuple(data["test"]),
            val=tuple(data.get("val", ())),
        )


def _section_ids(sections: Sequence[Any]) -> list[str]:
    if isinstance(sections, str):
        raise TypeError("sections: expected a sequence of section ids or AnnData, got a string")
    ids = []
    for s in sections:
        if hasattr(s, "uns") and hasattr(s, "obs"):  # an AnnData
            try:
                ids.append(K.section_id(s, default=None))
            except ValueError:
                raise ValueError(
                    "sections: an AnnData has no uns['mclstexp']['section']; pass section ids"
                ) from None
        else:
            ids.append(str(s))
    if len(set(ids)) != len(ids):
        dupes = sorted({s for s in ids if ids.count(s) > 1})
        raise ValueError(f"sections: duplicated section ids {dupes}; each section once")
    if len(ids) < 2:
        raise ValueError(f"sections: cross-validation needs at least 2 sections, got {len(ids)}")
    return ids


def _pick_val(
    train: list[str], n_val: int, rng: np.random.Generator, groups: Mapping[str, str] | None
) -> tuple[list[str], list[str]]:
    if n_val <= 0:
        return train, []
    if groups is None:
        if n_val >= len(train):
            raise ValueError(
                f"n_val: {n_val} validation sections leave no training section "
                f"(only {len(train)} available); lower n_val"
            )
        chosen = set(rng.choice(np.array(train), size=n_val, replace=False).tolist())
    else:
        # Validation by whole patients, so validation is as unseen as the test patient.
        pats = sorted({groups[s] for s in train})
        if n_val >= len(pats):
            raise ValueError(
                f"n_val: {n_val} validation patients leave no training patient "
                f"(only {len(pats)} available); lower n_val"
            )
        vp = set(rng.choice(np.array(pats), size=n_val, replace=False).tolist())
        chosen = {s for s in train if groups[s] in vp}
    return [s for s in train if s not in chosen], [s for s in train if s in chosen]


def leave_one_section_out(
    sections: Sequence[Any],
    *,
    holdout: Sequence[str] | None = None,
    n_val: int = 0,
    shuffle: bool = False,
    seed: int = 0,
) -> list[Fold]:
    """One fold per section: that section is the test set, the others train.

    Parameters
    ----------
    sections
        Section ids (or AnnData with ``uns["mclstexp"]["section"]``), unique.
    holdout
        Only these sections are held out, one fold each, in this order (default: every section
        in turn); an id not in ``sections`` raises ``ValueError``.
    n_val
        Number of the remaining sections held out for validation in each fold (chosen with
        ``seed``; 0 = none).
    shuffle
        Shuffle the order of the folds with ``seed`` (the default keeps the given order).
    seed
        Seed for validation choice and shuffling.

    Returns
    -------
    list of Fold

    Examples
    --------
    >>> [f.name for f in leave_one_section_out(["A1", "A2", "B1"])]
    ['section=A1', 'section=A2', 'section=B1']
    >>> leave_one_section_out(["A1", "A2", "B1"])[0].train
    ('A2', 'B1')
    >>> [f.test for f in leave_one_section_out(["A1", "A2", "B1"], holdout=["B1"])]
    [('B1',)]
    """
    ids = _section_ids(sections)
    chosen = ids
    if holdout is not None:
        if isinstance(holdout, str):
            raise TypeError("holdout: expected a sequence of section ids, got a string")
        chosen = [str(s) for s in holdout]
        unknown = [s for s in chosen if s not in ids]
        if unknown:
            raise ValueError(f"holdout: unknown section(s) {unknown}; the dataset has {ids}")
    rng = np.random.default_rng(seed)
    folds = []
    for sid in chosen:
        train, val = _pick_val([s for s in ids if s != sid], n_val, rng, None)
        folds.append(Fold(f"section={sid}", train=tuple(train), test=(sid,), val=tuple(val)))
    if shuffle:
        folds = [folds[i] for i in rng.permutation(len(folds))]
    return folds


def leave_one_patient_out(
    sections: Sequence[Any],
    patients: Sequence[str] | Mapping[str, str] | None = None,
    *,
    n_val: int = 0,
    shuffle: bool = False,
    seed: int = 0,
) -> list[Fold]:
    """One fold per patient: all of that patient's sections are tested, the others train.

    Parameters
    ----------
    sections
        Section ids (or AnnData), unique.
    patients
        The patient of each section: a sequence aligned with ``sections`` or a mapping
        section -> patient. May be omitted when ``sections`` are AnnData carrying
        ``uns["mclstexp"]["patient"]`` (or ``obs["patient"]``).
    n_val
        Number of the remaining *patients* whose sections are held out for validation.
    shuffle
        Shuffle the order of the folds with ``seed`` (default: patients in first-seen order).
    seed
        Seed for validation choice and shuffling.

    Returns
    -------
    list of Fold

    Examples
    --------
    >>> folds = leave_one_patient_out(["A1", "A2", "B1"], ["A", "A", "B"])
    >>> [(f.name, f.train, f.test) for f in folds]
    [('patient=A', ('B1',), ('A1', 'A2')), ('patient=B', ('A1', 'A2'), ('B1',))]
    """
    ids = _section_ids(sections)
    if patients is None:
        pats = []
        for s in sections:
            meta = getattr(s, "uns", {}).get(K.UNS, {})
            p = meta.get(K.UNS_PATIENT) if isinstance(meta, Mapping) else None
            if p is None and hasattr(s, "obs") and K.PATIENT in s.obs:
                values = set(map(str, s.obs[K.PATIENT]))
                p = values.pop() if len(values) == 1 else None
            if p is None:
                raise ValueError(
                    "patients: not given and a section carries no patient id; pass patients="
                )
            pats.append(str(p))
    elif isinstance(patients, Mapping):
        missing = [s for s in ids if s not in patients]
        if missing:
            raise ValueError(f"patients: no patient given for sections {missing}")
        pats = [str(patients[s]) for s in ids]
    else:
        if isinstance(patients, str) or len(patients) != len(ids):
            raise ValueError(
                f"patients: expected one patient id per section ({len(ids)}), got "
                f"{1 if isinstance(patients, str) else len(patients)}"
            )
        pats = [str(p) for p in patients]
    groups = dict(zip(ids, pats, strict=True))
    order = list(dict.fromkeys(pats))
    if len(order) < 2:
        raise ValueError(
            f"patients: leave-one-patient-out needs at least 2 patients, got {order}; "
            "use leave_one_section_out"
        )
    rng = np.random.default_rng(seed)
    folds = []
    for p in order:
        test = [s for s in ids if groups[s] == p]
        train, val = _pick_val([s for s in ids if groups[s] != p], n_val, rng, groups)
        folds.append(Fold(f"patient={p}", train=tuple(train), test=tuple(test), val=tuple(val)))
    if shuffle:
        folds = [folds[i] for i in rng.permutation(len(folds))]
    return folds


def save_folds(path: str | os.PathLike[str], folds: Sequence[Fold]) -> None:
    """Write folds as JSON (a list of :meth:`Fold.to_dict`)."""
    Path(path).write_text(json.dumps([f.to_dict() for f in folds], indent=1) + "\n")


def load_folds(path: str | os.PathLike[str]) -> list[Fold]:
    """Read folds written by :func:`save_folds`."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of folds")
    return [Fold.from_dict(d) for d in data]
