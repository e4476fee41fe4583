"""Training: sections, augmentation, the batch loader, the loop (AMP, resume, DDP), folds.

- ``sections``: :class:`TrainingSection` (a section's spot arrays and patches);
- ``augment``: colour jitter, flip, rotation (native kernel on CPU, torch elsewhere);
- ``loader``: :class:`BatchDataset` and the epoch's batch keys;
- ``setup``: :func:`setup_training` (configs, resume, seeds, model, optimiser, DDP);
- ``loop``: :func:`train_model` and :func:`train_one_epoch`;
- ``checkpoint``: the checkpoint payload, saving and :func:`load_checkpoint`;
- ``distributed``: process groups under torchrun;
- ``folds``: the one cross-validation fold implementation (no torch).

What training shares with inference (attention sequences, device, autocast, backbone features,
the all-gather) lives in :mod:`mclstexp.models`; ``train`` never imports :mod:`mclstexp.tl`.
"""

from __future__ import annotations

from mclstexp._lazy import lazy_exports

_EXPORTS = {
    "TrainingSection": "sections",
    "augment_batch": "augment",
    "BatchDataset": "loader",
    "setup_training": "setup",
    "TrainingRun": "setup",
    "train_model": "loop",
    "train_one_epoch": "loop",
    "train_step": "loop",
    "epoch_data": "loop",
    "TrainResult": "loop",
    "load_checkpoint": "checkpoint",
    "leave_one_section_out": "folds",
    "leave_one_patient_out": "folds",
    "Fold": "folds",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
