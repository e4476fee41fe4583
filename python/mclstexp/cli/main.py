"""The ``mclstexp`` command: one subcommand per job.

Each subcommand lives in its own module of :mod:`mclstexp.cli` and contributes a
``register(subparsers)`` function; only subcommands that are implemented are registered.

Every subcommand (and ``mclstexp-tile``) runs under one handler, :func:`run_handled`: an error
the user can cause and fix (:data:`USER_ERRORS`: a bad argument, a missing, unreadable or
damaged file, data that cannot be used) is printed as one line, ``PROG: error: MESSAGE``, and the
exit status is 2, as for argparse's own errors. ``--debug`` (or ``MCLSTEXP_DEBUG=1``) shows the
full traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import Any

import mclstexp
from mclstexp.exceptions import MclstexpError

#: Errors a user causes and can fix: reported in one line with exit status 2, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (MclstexpError, OSError, ValueError)
#: Exit status of a command refused for a user error (argparse uses the same).
USAGE_ERROR = 2
_DEBUG_HELP = "on an error, show the full traceback (also MCLSTEXP_DEBUG=1)"

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
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        import_module(f"mclstexp.cli.{name}").register(subparsers)
    for sub in subparsers.choices.values():  # `mclstexp predict --debug ...` too
        add_debug_flag(sub, default=argparse.SUPPRESS)
    return parser


def add_debug_flag(parser: argparse.ArgumentParser, *, default: Any = False) -> None:
    """Add ``--debug`` (see :func:`run_handled`) to ``parser``; a subcommand's parser adds it
    with ``default=argparse.SUPPRESS`` so it does not reset the top-level flag."""
    parser.add_argument("--debug", action="store_true", default=default, help=_DEBUG_HELP)


def run_handled(
    prog: str, func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace
) -> int:
    """Run a command's function on its parsed arguments: its exit status, or
    :data:`USAGE_ERROR` after one line on stderr for a user error (:data:`USER_ERRORS`).

    With ``args.debug`` or ``MCLSTEXP_DEBUG=1`` the error propagates with its traceback.

    Examples
    --------
    >>> def refuse(args):
    ...     raise ValueError("--k: must be >= 1, got 0")
    >>> run_handled("mclstexp predict", refuse, argparse.Namespace(debug=False))  # doctest: +SKIP
    mclstexp predict: error: --k: must be >= 1, got 0
    2
    """
    try:
        return int(func(args) or 0)
    except USER_ERRORS as err:
        if getattr(args, "debug", False) or os.environ.get("MCLSTEXP_DEBUG", "") not in ("", "0"):
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return USAGE_ERROR


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (its type name when it has none).

    Examples
    --------
    >>> one_line(ValueError("bad\\n  value"))
    'bad value'
    >>> one_line(KeyError())
    'KeyError'
    """
    text = " ".join(str(err).split())
    return text or type(err).__name__


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
        return 0 if args.command is None else USAGE_ERROR
    return run_handled(f"mclstexp {args.command}", args.func, args)


if __name__ == "__main__":
    sys.exit(main())
