"""Benchmarks: run with ``pytest benches --benchmark-only`` (not part of the default test run).

Every benchmark measures mclstexp side by side with its baselines in the same run; report ratios.
"""

from __future__ import annotations

import os

# Benchmarks are specified on 2 threads unless the caller says otherwise.
os.environ.setdefault("MCLSTEXP_NUM_THREADS", "2")


def pytest_report_header() -> str:
    """Which instruction set the native kernels run (``MCLSTEXP_NO_AVX512`` caps it at AVX2)."""
    from mclstexp import _native

    capped = "MCLSTEXP_NO_AVX512" in os.environ
    return f"mclstexp native SIMD level: {_native.simd_level()} (MCLSTEXP_NO_AVX512 set: {capped})"
