"""Datasets: the embedded synthetic default, the public her2st data, HEST-1k and HEST-Benchmark."""

from __future__ import annotations

from mclstexp._lazy import lazy_exports

# The modules are private (``_synthetic``, ``_her2st``): a submodule named like the function it
# defines would replace that function on the package once imported.
_EXPORTS = {
    "synthetic": "_synthetic",
    "write_pyramid_tiff": "_pyramid",
    "default_cache_dir": "_synthetic",
    "her2st": "_her2st",
    "hest": "_hest",
    "hest_bench": "_hest",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
