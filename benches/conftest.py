"""Benchmarks: run with ``pytest benches --benchmark-only`` (not part of the default test run).

Every benchmark measures mclstexp side by side with its baselines in the same run; report ratios.
"""

from __future__ import annotations

import os

# Benchmarks are specified on 2 threads unless the caller says otherwise.
os.environ.setdefault("MCLSTEXP_NUM_THREADS", "2")
