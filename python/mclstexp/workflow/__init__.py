"""The main job: tile -> train -> reference -> predict -> evaluate, over cross-validation folds.

``mclstexp run`` and ``mclstexp bench`` are thin command-line fronts over this package: the main
job (``dataset``, ``fold``, ``experiment``, ``report``) and the benchmark engines
(``bench_fidelity``, ``bench_retrieval``, ``bench_hest``).
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
    "run_fidelity_bench": "bench_fidelity",
    "run_retrieval_bench": "bench_retrieval",
    "run_hest_bench": "bench_hest",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
