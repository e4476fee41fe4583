"""Variants of a preset trained side by side in a fold: the inner-CV score that chooses one,
the choice (its files linked into the fold's folder) and its model back in memory.

Examples
--------
>>> variant_score({"head_selection": {"chosen": {"blend": 0.2, "blend+context": 0.25}}})
0.25
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FOLD_FILES", "choose_variant", "kept_model", "variant_score"]


#: The files of a fold's model that the chosen variant's copies replace in the fold's folder.
FOLD_FILES = ("model.pt", "reference.npz", "config.json", "log.jsonl", "checkpoint.pt")


def variant_score(choice: Mapping[str, Any]) -> float:
    """A trained variant's inner-CV score (training sections only): the mean per-gene PCC of
    its best head at the chosen settings, ``blend+context`` when chosen, else ``blend``, else
    retrieval at the chosen K; NaN without an inner cross-validation."""
    hs, ks = choice.get("head_selection") or {}, choice.get("k_selection") or {}
    if hs:
        chosen = hs["chosen"]
        return float(chosen.get("blend+context", chosen["blend"]))
    if "scores" in ks:
        return float(ks["scores"][str(ks["k"])])
    return float("nan")


def choose_variant(
    outcomes: Mapping[str, Any], fold_dir: Path
) -> tuple[str, dict[str, Any] | None]:
    """The variant with the best :func:`variant_score` (ties and NaN: the first listed) and
    its record; its model files are linked into ``fold_dir`` (``mclstexp predict`` reads them
    there; a copy where hard links are refused). One candidate (no variants): itself, no
    record."""
    import os
    import shutil

    names = list(outcomes)
    if len(names) == 1:
        return names[0], None
    scores = {n: variant_score(outcomes[n][1][2]) for n in names}
    best = max(names, key=lambda n: (np.nan_to_num(scores[n], nan=-np.inf), -names.index(n)))
    source = fold_dir / "variants" / best
    for name in FOLD_FILES:
        if (source / name).is_file():
            (fold_dir / name).unlink(missing_ok=True)
            try:
                os.link(source / name, fold_dir / name)
            except OSError:
                shutil.copy2(source / name, fold_dir / name)
    record = {"variant": best, "scores": scores, "score": "inner-CV mean PCC of the best head"}
    return best, record


def kept_model(trained: Any, folder: Path) -> Any:
    """``trained`` (a :class:`~mclstexp.workflow.fold.TrainedFold`) with its model in memory:
    a variant that waited while another one trained has none
    (:func:`mclstexp.workflow.fold.run_fold` drops it) and gets it back from ``folder``'s
    ``model.pt``, the same tensors (``torch.load(weights_only=True)``)."""
    if trained.model is None:
        from mclstexp.train.checkpoint import load_checkpoint

        trained.model = load_checkpoint(folder / "model.pt")[0]
    return trained
