"""``mclstexp bench``: side-by-side benchmarks, one sub-subcommand per kind.

One pattern for every kind ``X`` (``retrieval``, ``fidelity``, and later ``gpu``): the engine is
library code, ``mclstexp.workflow.bench_X.run_X_bench(..., out_dir=, log=print) -> dict``, which
runs the measurements side by side with their baselines, writes its files (JSON/CSV results and
the charts, drawn by a function of :mod:`mclstexp.pl`) and returns the records with a ready text
table; it can be called and tested from Python without a command line. The front is
``mclstexp.cli.bench_X``: ``register(bench_subparsers)`` adds the arguments and sets ``func``,
and ``func`` only checks the arguments, calls the engine and prints what it returned. Adding a
kind is adding those two modules and the front's name to ``_BENCH_MODULES`` below; ``bench``
itself only dispatches.
"""

from __future__ import annotations

import argparse
from importlib import import_module
from typing import Any

# Modules of mclstexp.cli that each add one benchmark kind, in the order --help lists them.
_BENCH_MODULES: tuple[str, ...] = ("bench_retrieval", "bench_fidelity", "bench_gpu", "bench_hest")


def register(subparsers: Any) -> None:
    """Add ``bench`` and its kinds to the ``mclstexp`` subcommands.

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="mclstexp")
    >>> register(parser.add_subparsers())
    >>> parser.parse_args(["bench", "retrieval", "--n", "1000"]).n
    [1000]
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="run a benchmark side by side with its baselines",
        description="Benchmarks that print a table of ratios to the baselines and write plots.",
    )
    kinds = parser.add_subparsers(dest="bench_kind", metavar="KIND")
    for name in _BENCH_MODULES:
        import_module(f"mclstexp.cli.{name}").register(kinds)

    def _help(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=_help)
