"""Training: patch-cache data loading, the loop (AMP, resume, DDP), cross-validation folds."""

from __future__ import annotations

from mclstexp._lazy import lazy_exports

_EXPORTS = {
    "TrainingSection": "sections",
    "train_model": "loop",
    "load_checkpoint": "checkpoint",
    "leave_one_section_out": "folds",
    "leave_one_patient_out": "folds",
    "Fold": "folds",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
