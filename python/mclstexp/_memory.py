"""Hand freed heap memory back to the operating system.

On Linux with glibc, memory that torch and numpy free stays in the allocator's arenas (the
process's resident size stays at its high-water mark, and blocks freed in the middle of an arena
are reused only by allocations that fit). Two calls address it:

- :func:`trim_heap` (``malloc_trim(0)``) returns every free page; called after each phase that
  allocates many large temporaries (front outputs, frozen features, an epoch), it lowered a
  her2st fold's peak RSS by about 150 MB, at the cost of a few milliseconds.
- :func:`map_large_blocks` (``mallopt(M_MMAP_THRESHOLD)``) serves every block of 1 MiB or more
  from its own mapping, unmapped when freed. glibc's default threshold starts at 128 KiB but
  rises to the size of each large block freed (up to 32 MiB), after which tensors of a few MB
  land in the arenas and fragment them; with the fixed threshold a her2st fold's RSS during the
  front outputs was 170 MB lower.

On other platforms (macOS, Windows, musl) both do nothing.

A third, :func:`skip_unusable_triton`, is about code rather than data: importing timm imports
torchvision, whose ``ops`` import ``torch._dynamo`` and with it Triton, a GPU kernel compiler,
whose shared library and modules add about 75 MB of resident memory to a process that has no
GPU to run its kernels on (measured with torch 2.15: ``import torch, timm`` 719 MB, 648 MB
without Triton).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from functools import lru_cache
from typing import Any

__all__ = ["map_large_blocks", "skip_unusable_triton", "trim_heap"]

#: glibc's ``mallopt`` parameter number of the mmap threshold (``malloc.h``).
M_MMAP_THRESHOLD = -3


@lru_cache(maxsize=1)
def _glibc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 (musl has neither)
    except (OSError, AttributeError):
        return None
    return libc


def trim_heap() -> bool:
    """Return free heap pages to the OS (glibc ``malloc_trim(0)``); ``False`` where there is no
    such call.

    Examples
    --------
    >>> isinstance(trim_heap(), bool)
    True
    """
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def map_large_blocks(threshold: int = 1 << 20) -> bool:
    """Serve allocations of at least ``threshold`` bytes from their own mappings for the rest
    of the process (glibc ``mallopt(M_MMAP_THRESHOLD, threshold)``, which also stops glibc
    from raising the threshold by itself), so that large arrays go back to the OS when freed.

    Returns ``False`` (and changes nothing) where there is no glibc, or when the user set
    ``MALLOC_MMAP_THRESHOLD_`` in the environment (theirs wins).

    Examples
    --------
    >>> isinstance(map_large_blocks(), bool)
    True
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))


#: Set to ``1`` to let torch import Triton even where :func:`skip_unusable_triton` would not.
KEEP_TRITON_ENV = "MCLSTEXP_KEEP_TRITON"


def skip_unusable_triton() -> bool:
    """Keep torch from importing Triton in a process without a GPU; ``True`` when it did so.

    Triton compiles GPU kernels only (torch's CPU compiler emits C++), so where torch sees no
    CUDA/ROCm or XPU device the import costs memory and serves nothing. The module is marked
    absent (``sys.modules["triton"] = None``): torch then reports it as not installed, exactly
    as on a machine without it. Nothing happens when a GPU is visible, when Triton or
    ``torch._dynamo`` is already imported (too late to matter), or when ``MCLSTEXP_KEEP_TRITON=1``.

    Examples
    --------
    >>> isinstance(skip_unusable_triton(), bool)
    True
    """
    if os.environ.get(KEEP_TRITON_ENV) == "1":
        return False
    if "triton" in sys.modules or "torch._dynamo" in sys.modules:
        return False
    import torch

    xpu = getattr(torch, "xpu", None)
    if torch.cuda.is_available() or (xpu is not None and xpu.is_available()):
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]
    return True
