"""Repository-wide pytest configuration: the package's docstring examples run as tests.

``pytest`` (``testpaths`` in ``pyproject.toml``) collects the examples of every module under
``python/mclstexp`` besides ``tests/``. Each module is imported by its dotted name, so the examples
run against the ``mclstexp`` that Python imports: the installed wheel in CI, the source tree with
``PYTHONPATH=python``. pytest's own ``--doctest-modules`` would import the source file by its path
instead, a second copy without the compiled extension in CI; do not add it.

Examples needing a file, the network or a GPU are marked ``# doctest: +SKIP``; examples that write
files write into a temporary folder. Option flags: ``doctest_optionflags`` in ``pyproject.toml``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

# pytest's doctest collector (no public alias); only how it imports the module is changed below.
from _pytest.doctest import DoctestModule

PACKAGE = Path(__file__).resolve().parent / "python" / "mclstexp"


class PackageDoctests(DoctestModule):
    """The doctests of one module of the package, imported as ``mclstexp.<...>``."""

    def _getobj(self) -> ModuleType:
        rel = self.path.resolve().relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        return importlib.import_module(".".join(parts))


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Collect the doctests of every ``.py`` file of the package (``__main__.py`` excepted)."""
    if file_path.suffix != ".py" or file_path.name == "__main__.py":
        return None
    if PACKAGE not in file_path.resolve().parents:
        return None
    return PackageDoctests.from_parent(parent, path=file_path)
