"""Reference rows for every evaluation: what a number means depends on what trivial predictors get.

Three model-free predictors, fitted on the training sections only and evaluated exactly like the
model (same held-out spots, same targets, same metrics):

* :class:`TrainingMeanBaseline` (``"training_mean"``): every spot gets the training spots' mean.
* :class:`ColourRidgeBaseline` (``"colour_ridge"``): ridge regression from simple colour/texture
  features of the patch (:func:`patch_colour_features`) to expression; the ridge penalty is chosen
  by cross-validation within the training data (by training section when ``groups`` is given).
* :class:`LibrarySizeBaseline` (``"library_size"``): each gene regressed on log library size in the
  training sections, applied to the test spots' depth *predicted* from the same colour features;
  with ``oracle=True`` (``"library_size_oracle"``) their *measured* depth, which a real predictor
  never has. It shows how much of a score is sequencing depth rather than gene-specific signal.

All share ``fit(X, expression, *, log_library_size=None, groups=None)`` and
``predict(X, *, log_library_size=None)`` where ``X`` is either colour features ``(n, F)`` or uint8
patches ``(n, H, W, 3)`` (features are then computed, chunk by chunk).

Examples
--------
>>> import numpy as np
>>> from mclstexp.baselines import TrainingMeanBaseline
>>> b = TrainingMeanBaseline().fit(np.zeros((4, 2)), np.array([[1.0, 2], [3, 4], [1, 2], [3, 4]]))
>>> b.predict(np.zeros((2, 2)))
array([[2., 3.],
       [2., 3.]])
"""

from __future__ import annotations

from mclstexp.baselines.colour import COLOUR_FEATURE_NAMES, patch_colour_features
from mclstexp.baselines.probe import LinearProbeBaseline
from mclstexp.baselines.ridge import DEFAULT_ALPHAS
from mclstexp.baselines.rows import (
    Baseline,
    ColourRidgeBaseline,
    LibrarySizeBaseline,
    TrainingMeanBaseline,
    reference_baselines,
)

__all__ = [
    "COLOUR_FEATURE_NAMES",
    "DEFAULT_ALPHAS",
    "Baseline",
    "ColourRidgeBaseline",
    "LibrarySizeBaseline",
    "LinearProbeBaseline",
    "TrainingMeanBaseline",
    "patch_colour_features",
    "reference_baselines",
]
