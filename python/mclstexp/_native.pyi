"""Type stubs of the Rust extension ``mclstexp._native`` (checked by ``python -m mypy.stubtest``).

Each section belongs to one core area; keep them in the order of ``rust/mclstexp-py/src/lib.rs``.
"""

import os
from collections.abc import Sequence
from typing import final

import numpy as np
import numpy.typing as npt

_F32Matrix = npt.NDArray[np.float32]
_I64Matrix = npt.NDArray[np.int64]

__version__: str

# Every name the module exports (PyO3 maintains the runtime list; keep this one in sync).
__all__ = [
    "__version__",
    # pool
    "default_num_threads",
    "_diagnostic_sleep",
    # simd
    "simd_level",
    # augment
    "augment_patches_uint8",
    "augment_patches_tensor",
    # retrieval
    "_ExactIndex",
    "topk_cosine",
    # normalize
    "normalize_to_tensor_layout",
    "normalize_from_tensor_layout",
    # stain
    "stain_macenko_fit",
    "stain_macenko_transform",
    "stain_reinhard_fit",
    "stain_reinhard_transform",
    # slide
    "NativeSlide",
    "tissue_mask",
    "grid_centers",
    "resize_rgb",
]

# --- pool -------------------------------------------------------------------------------------
def default_num_threads() -> int: ...
def _diagnostic_sleep(n_tasks: int, millis: int, *, n_threads: int | None = None) -> int: ...

# --- simd -------------------------------------------------------------------------------------
def simd_level() -> str: ...

# --- augment ----------------------------------------------------------------------------------
def augment_patches_uint8(
    patches: npt.NDArray[np.uint8],
    brightness: npt.NDArray[np.float64],
    contrast: npt.NDArray[np.float64],
    saturation: npt.NDArray[np.float64],
    flip: npt.NDArray[np.bool_],
    angle: npt.NDArray[np.float64],
    *,
    indices: npt.NDArray[np.int64] | None = None,
    out_rows: npt.NDArray[np.int64] | None = None,
    out: npt.NDArray[np.uint8] | None = None,
    n_threads: int | None = None,
) -> npt.NDArray[np.uint8]: ...
def augment_patches_tensor(
    patches: npt.NDArray[np.uint8],
    brightness: npt.NDArray[np.float64],
    contrast: npt.NDArray[np.float64],
    saturation: npt.NDArray[np.float64],
    flip: npt.NDArray[np.bool_],
    angle: npt.NDArray[np.float64],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    indices: npt.NDArray[np.int64] | None = None,
    out_rows: npt.NDArray[np.int64] | None = None,
    out: npt.NDArray[np.float32] | None = None,
    n_threads: int | None = None,
) -> npt.NDArray[np.float32]: ...

# --- retrieval --------------------------------------------------------------------------------
@final
class _ExactIndex:
    def __new__(cls, dim: int) -> _ExactIndex: ...
    def add(self, rows: _F32Matrix, *, n_threads: int | None = None) -> None: ...
    def search(
        self, queries: _F32Matrix, k: int, *, n_threads: int | None = None
    ) -> tuple[_F32Matrix, _I64Matrix]: ...
    def save(self, path: str | os.PathLike[str]) -> None: ...
    @staticmethod
    def load(path: str | os.PathLike[str], *, n_threads: int | None = None) -> _ExactIndex: ...
    def __len__(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def kernel(self) -> str: ...

def topk_cosine(
    queries: _F32Matrix, reference: _F32Matrix, k: int, *, n_threads: int | None = None
) -> tuple[_F32Matrix, _I64Matrix]: ...

# --- normalize --------------------------------------------------------------------------------
def normalize_to_tensor_layout(
    patches: npt.NDArray[np.uint8],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    n_threads: int | None = None,
) -> npt.NDArray[np.float32]: ...
def normalize_from_tensor_layout(
    tensors: npt.NDArray[np.float32],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    n_threads: int | None = None,
) -> npt.NDArray[np.uint8]: ...

# --- stain ------------------------------------------------------------------------------------
def stain_macenko_fit(
    image: npt.NDArray[np.uint8],
    *,
    io: float = 240.0,
    alpha: float = 1.0,
    beta: float = 0.15,
    min_tissue: float = 0.01,
) -> tuple[list[list[float]], list[float]]: ...
def stain_macenko_transform(
    patches: npt.NDArray[np.uint8],
    stain_matrix: Sequence[Sequence[float]],
    max_conc: Sequence[float],
    *,
    io: float = 240.0,
    alpha: float = 1.0,
    beta: float = 0.15,
    min_tissue: float = 0.01,
    concentrations: bool = False,
    n_threads: int | None = None,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_], npt.NDArray[np.float32] | None]: ...
def stain_reinhard_fit(
    image: npt.NDArray[np.uint8],
    *,
    io: float = 240.0,
    beta: float = 0.15,
    min_tissue: float = 0.01,
) -> tuple[list[float], list[float]]: ...
def stain_reinhard_transform(
    patches: npt.NDArray[np.uint8],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    io: float = 240.0,
    beta: float = 0.15,
    min_tissue: float = 0.01,
    n_threads: int | None = None,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]: ...

# --- slide ------------------------------------------------------------------------------------

@final
class NativeSlide:
    def __new__(cls, path: str | os.PathLike[str], *, cache_bytes: int = ...) -> NativeSlide: ...
    @property
    def path(self) -> os.PathLike[str]: ...
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
    def tile_decodes(self) -> int: ...
    def clear_cache(self) -> None: ...
    def read_region(
        self, x: int, y: int, level: int, width: int, height: int, *, n_threads: int | None = None
    ) -> npt.NDArray[np.uint8]: ...
    def read_patches(
        self,
        centers: npt.NDArray[np.float64],
        *,
        size: int = 224,
        level: int = 0,
        mpp: float | None = None,
        slide_mpp: float | None = None,
        n_threads: int | None = None,
        out: npt.NDArray[np.uint8] | None = None,
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]: ...
    def thumbnail(
        self, max_size: int, *, n_threads: int | None = None
    ) -> npt.NDArray[np.uint8]: ...

def tissue_mask(
    image: npt.NDArray[np.uint8], *, min_saturation: int = 20, radius: int = 2
) -> tuple[npt.NDArray[np.bool_], int]: ...
def grid_centers(
    width: int,
    height: int,
    fov: float,
    mask: npt.NDArray[np.bool_],
    *,
    min_fraction: float = 0.5,
) -> npt.NDArray[np.float64]: ...
def resize_rgb(
    image: npt.NDArray[np.uint8],
    width: int,
    height: int,
    *,
    box: tuple[float, float, float, float] | None = None,
) -> npt.NDArray[np.uint8]: ...
