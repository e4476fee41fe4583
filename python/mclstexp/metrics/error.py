"""Entry-wise errors of a prediction: mean squared and mean absolute error."""

from __future__ import annotations

from typing import Any

import numpy as np

from mclstexp.metrics._checks import _check_pair

__all__ = ["mae", "mse"]


def mse(y_true: Any, y_pred: Any) -> float:
    """Mean squared error over all (spot, gene) entries.

    Examples
    --------
    >>> import numpy as np
    >>> mse(np.zeros((3, 2)), np.ones((3, 2)))
    1.0
    """
    t, p = _check_pair(y_true, y_pred)
    return float(np.mean((t - p) ** 2))


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error over all (spot, gene) entries.

    Examples
    --------
    >>> import numpy as np
    >>> mae(np.zeros((3, 2)), np.full((3, 2), -2.0))
    2.0
    """
    t, p = _check_pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))
