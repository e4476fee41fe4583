"""Hand freed heap memory back to the operating system between heavy phases.

On Linux with glibc, memory that torch and numpy free stays in the allocator's arenas (the
process's resident size stays at its high-water mark, and blocks freed in the middle of an arena
are reused only by allocations that fit). ``malloc_trim(0)`` returns every free page; calling it
after each phase that allocates many large temporaries (front outputs, frozen features, an
epoch) lowered a her2st fold's peak RSS by about 150 MB, at the cost of a few milliseconds. On
other platforms (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache

__all__ = ["trim_heap"]


@lru_cache(maxsize=1)
def _malloc_trim() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def trim_heap() -> bool:
    """Return free heap pages to the OS (glibc ``malloc_trim(0)``); ``False`` where there is no
    such call.

    Examples
    --------
    >>> isinstance(trim_heap(), bool)
    True
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
