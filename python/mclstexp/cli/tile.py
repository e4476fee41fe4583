"""The ``mclstexp-tile`` command: cut patches from whole-slide images into a Zarr patch cache."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import mclstexp


def build_parser() -> argparse.ArgumentParser:
    """Build the parser of ``mclstexp-tile``.

    Examples
    --------
    >>> build_parser().prog
    'mclstexp-tile'
    """
    parser = argparse.ArgumentParser(
        prog="mclstexp-tile",
        description="Cut patches at spot centres or on a tissue grid into a Zarr patch cache.",
    )
    parser.add_argument("--version", action="version", version=f"mclstexp {mclstexp.__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mclstexp-tile`` and return the exit status."""
    build_parser().parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
