"""The main job: tile -> train -> reference -> predict -> evaluate, over cross-validation folds.

``mclstexp run`` and ``mclstexp bench fidelity`` are thin command-line fronts over this package.
"""

from __future__ import annotations

from mclstexp._lazy import lazy_exports

_EXPORTS = {
    "DatasetSpec": "dataset",
    "load_dataset": "dataset",
    "run_fold": "fold",
    "train_fold": "fold",
    "TrainedFold": "fold",
    "FoldOutcome": "fold",
    "run_experiment": "experiment",
    "format_table": "report",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
