"""The docstring examples of every module of the package run as tests.

Modules are found with ``pkgutil`` and imported by their dotted name, so the examples run against
the ``mclstexp`` that Python imports (the installed wheel in CI, the source tree with
``PYTHONPATH=python``), through the standard library's ``doctest`` (no pytest internals). Each runs
in a temporary working folder, so an example that writes a file writes it there. Examples that need
a file, the network or a GPU are marked ``# doctest: +SKIP``.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import mclstexp

FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def _modules() -> list[str]:
    names = ["mclstexp"]
    for info in pkgutil.walk_packages(mclstexp.__path__, prefix="mclstexp."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return sorted(names)


def test_modules_are_found() -> None:
    names = _modules()
    assert "mclstexp.models.config" in names and "mclstexp.pp.stain" in names
    assert len(names) > 60


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module) if t.examples]
    # only the docstrings defined in this module (not objects it re-exports)
    tests = [t for t in tests if t.name.split(".")[: len(name.split("."))] == name.split(".")]
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    failed, attempted = runner.summarize(verbose=False)
    if attempted == 0:
        pytest.skip("no docstring examples")
    assert failed == 0, "".join(report)
