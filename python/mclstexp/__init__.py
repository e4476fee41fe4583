"""mclstexp: predict spatial gene expression from H&E histology.

A re-implementation of mclSTExp (multimodal contrastive learning of spot expression + position
against image patches) with a Rust core for slide tiling, stain normalisation and exact top-k
retrieval.

Importing the package is cheap: PyTorch is only imported by the modules that train or embed
(``mclstexp.models``, ``mclstexp.train``, ``mclstexp.tl``).

Examples
--------
>>> import mclstexp
>>> mclstexp.__version__  # doctest: +SKIP
'0.1.0'
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from mclstexp.exceptions import MclstexpError, NoTissueError, SlideFormatError, WeightsError

try:
    __version__ = version("mclstexp")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

_SUBMODULES = {
    "io",
    "pp",
    "tl",
    "pl",
    "metrics",
    "baselines",
    "retrieval",
    "datasets",
    "models",
    "train",
    "workflow",
}

__all__ = [
    "MclstexpError",
    "NoTissueError",
    "SlideFormatError",
    "WeightsError",
    "__version__",
    *sorted(_SUBMODULES),
]


def __getattr__(name: str) -> Any:
    """Import subpackages on first access (``import mclstexp`` must not import torch)."""
    if name in _SUBMODULES:
        return import_module(f"mclstexp.{name}")
    raise AttributeError(f"module 'mclstexp' has no attribute {name!r}")
