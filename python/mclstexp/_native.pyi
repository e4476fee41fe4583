"""Type stubs of the Rust extension ``mclstexp._native`` (checked by ``python -m mypy.stubtest``).

Each section belongs to one core area; keep them in the order of ``rust/mclstexp-py/src/lib.rs``.
"""

import os
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
    # retrieval
    "_ExactIndex",
    "topk_cosine",
]

# --- pool -------------------------------------------------------------------------------------
def default_num_threads() -> int: ...
def _diagnostic_sleep(n_tasks: int, millis: int, *, n_threads: int | None = None) -> int: ...

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
