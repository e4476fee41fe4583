"""Type stubs of the Rust extension ``mclstexp._native`` (checked by ``python -m mypy.stubtest``).

Each section belongs to one core area; keep them in the order of ``rust/mclstexp-py/src/lib.rs``.
"""

import os as _os
from typing import final as _final

import numpy as _np
import numpy.typing as _npt

__version__: str

# Every name the module exports (PyO3 maintains the runtime list; keep this one in sync).
__all__ = [
    "__version__",
    # pool
    "default_num_threads",
    "_diagnostic_sleep",
    # slide
    "NativeSlide",
    "tissue_mask",
    "grid_centers",
    "resize_rgb",
]

# --- pool -------------------------------------------------------------------------------------
def default_num_threads() -> int: ...
def _diagnostic_sleep(n_tasks: int, millis: int, *, n_threads: int | None = None) -> int: ...

# --- slide ------------------------------------------------------------------------------------

@_final
class NativeSlide:
    def __new__(cls, path: str | _os.PathLike[str], *, cache_bytes: int = ...) -> NativeSlide: ...
    @property
    def path(self) -> _os.PathLike[str]: ...
    @property
    def file_size(self) -> int: ...
    @property
    def level_dimensions(self) -> list[tuple[int, int]]: ...
    @property
    def level_downsamples(self) -> list[float]: ...
    @property
    def mpp(self) -> tuple[float, float] | None: ...
    @property
    def vendor(self) -> str: ...
    @property
    def description(self) -> str | None: ...
    def tile_size(self, level: int) -> tuple[int, int]: ...
    def cache_used(self) -> int: ...
    def clear_cache(self) -> None: ...
    def read_region(
        self, x: int, y: int, level: int, width: int, height: int, *, n_threads: int | None = None
    ) -> _npt.NDArray[_np.uint8]: ...
    def read_patches(
        self,
        centers: _npt.NDArray[_np.float64],
        *,
        size: int = 224,
        level: int = 0,
        mpp: float | None = None,
        slide_mpp: float | None = None,
        n_threads: int | None = None,
        out: _npt.NDArray[_np.uint8] | None = None,
    ) -> tuple[_npt.NDArray[_np.uint8], _npt.NDArray[_np.bool_]]: ...
    def thumbnail(
        self, max_size: int, *, n_threads: int | None = None
    ) -> _npt.NDArray[_np.uint8]: ...

def tissue_mask(
    image: _npt.NDArray[_np.uint8], *, min_saturation: int = 20, radius: int = 2
) -> tuple[_npt.NDArray[_np.bool_], int]: ...
def grid_centers(
    width: int,
    height: int,
    fov: float,
    mask: _npt.NDArray[_np.bool_],
    *,
    min_fraction: float = 0.5,
) -> _npt.NDArray[_np.float64]: ...
def resize_rgb(
    image: _npt.NDArray[_np.uint8],
    width: int,
    height: int,
    *,
    box: tuple[float, float, float, float] | None = None,
) -> _npt.NDArray[_np.uint8]: ...
