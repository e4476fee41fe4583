"""``mclstexp bench``: side-by-side benchmarks, one sub-subcommand per kind.

Each module named in ``_BENCH_MODULES`` (in :mod:`mclstexp.cli`) exposes
``register(bench_subparsers)`` and adds one kind (``mclstexp bench retrieval``, ...), setting
``func`` on its parser. Adding a benchmark kind is adding a module and its name here.
"""

from __future__ import annotations

import argparse
from importlib import import_module
from typing import Any

# Modules of mclstexp.cli that each add one benchmark kind, in the order --help lists them.
_BENCH_MODULES: tuple[str, ...] = ("bench_retrieval", "bench_fidelity")


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
