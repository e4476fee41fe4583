"""The ``mclstexp`` command: one subcommand per job.

Each subcommand lives in its own module of :mod:`mclstexp.cli` and contributes a
``register(subparsers)`` function; only subcommands that are implemented are registered.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

import mclstexp

# Modules that define subcommands, in the order --help lists them.
_SUBCOMMAND_MODULES: tuple[str, ...] = (
    "run",
    "train",
    "predict",
    "evaluate",
    "tile",
    "embed",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``mclstexp`` with every implemented subcommand.

    Returns
    -------
    argparse.ArgumentParser
        The parser; each subcommand sets ``func`` in the parsed namespace.

    Examples
    --------
    >>> parser = build_parser()
    >>> parser.prog
    'mclstexp'
    """
    parser = argparse.ArgumentParser(
        prog="mclstexp",
        description="Predict spatial gene expression from H&E histology (mclSTExp).",
    )
    parser.add_argument("--version", action="version", version=f"mclstexp {mclstexp.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        import_module(f"mclstexp.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mclstexp`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status.

    Examples
    --------
    >>> main(["--help"])  # doctest: +SKIP
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
