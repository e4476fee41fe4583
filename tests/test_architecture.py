"""The house rules of docs/architecture.md, checked on the source: layers, privacy, sizes.

Every ``import`` and ``from ... import`` in ``python/mclstexp`` counts, at module level or inside a
function. A subpackage (or top-level module such as ``baselines.py``) may import only subpackages
of a lower layer, plus the shared leaves; no module imports an underscore name from another
subpackage; no file is over 600 lines and no function over 80 lines of code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "mclstexp"

#: Layers, lowest first (docs/architecture.md). A unit imports only units of lower layers.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("io", "metrics", "retrieval"),
    ("pp", "datasets", "pl", "baselines"),
    ("models",),
    ("train", "tl"),
    ("workflow",),
    ("cli",),
    ("__main__",),  # python -m mclstexp
)
#: Modules every layer may use: keys, lazy exports, progress bars, the extension, argument
#: checks, heap trimming, the errors.
SHARED = {
    "_keys",
    "_memory",
    "_lazy",
    "_progress",
    "_native",
    "_validate",
    "exceptions",
    "__init__",
    "__version__",
}
MAX_FILE_LINES = 600
MAX_FUNCTION_CODE_LINES = 80


def _layer(unit: str) -> int:
    for i, units in enumerate(LAYERS):
        if unit in units:
            return i
    raise AssertionError(f"{unit!r} is in no layer of LAYERS: add it (and to docs/architecture.md)")


def _unit(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports(tree: ast.AST) -> list[tuple[int, str, list[str]]]:
    """``(line, module, imported names)`` of every absolute mclstexp import in ``tree``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "mclstexp":  # from mclstexp import _keys, __version__
                out += [(node.lineno, f"mclstexp.{a.name}", []) for a in node.names]
            elif node.module.startswith("mclstexp."):
                out.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names if a.name.startswith("mclstexp.")]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            out.append((node.lineno, "." * node.level + (node.module or ""), []))
    return out


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _violations(path: Path) -> list[str]:
    return _violations_in(path.read_text(), _unit(path), str(path.relative_to(PACKAGE.parent)))


def _violations_in(source: str, me: str, rel: str) -> list[str]:
    found = []
    for line, module, names in _imports(ast.parse(source, rel)):
        if module.startswith("."):
            found.append(f"{rel}:{line}: relative import {module!r}; use absolute imports")
            continue
        parts = module.split(".")
        other = parts[1]
        if other in SHARED or other == me:
            continue
        if me not in SHARED and _layer(other) >= _layer(me):
            found.append(
                f"{rel}:{line}: {me} (layer {_layer(me)}) imports {module} (layer "
                f"{_layer(other)}): imports must go to lower layers only"
            )
        private = [p for p in parts[2:] if p.startswith("_") and not p.startswith("__")]
        private += [n for n in names if n.startswith("_") and not n.startswith("__")]
        if private:
            found.append(f"{rel}:{line}: {me} imports private {module} {private} of {other}")
    return found


def test_imports_go_down_the_layers_and_never_to_private_names() -> None:
    found = [v for path in _sources() for v in _violations(path)]
    assert not found, "\n".join(found)


def test_every_unit_has_a_layer() -> None:
    units = {_unit(p) for p in _sources()} - SHARED
    for unit in units:
        _layer(unit)


def _code_lines(lines: list[str], node: ast.AST, skip: set[int]) -> int:
    span = range(node.lineno, node.end_lineno + 1)  # type: ignore[attr-defined]
    return sum(
        1
        for i in span
        if i not in skip and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#")
    )


def _docstring_lines(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                skip.update(range(body[0].lineno, body[0].end_lineno + 1))  # type: ignore[operator]
    return skip


def test_files_read_in_one_sitting_and_functions_stay_short() -> None:
    found = []
    for path in _sources():
        text = path.read_text()
        lines = text.splitlines()
        rel = path.relative_to(PACKAGE.parent)
        if len(lines) > MAX_FILE_LINES:
            found.append(f"{rel}: {len(lines)} lines (at most {MAX_FILE_LINES})")
        tree = ast.parse(text)
        skip = _docstring_lines(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = _code_lines(lines, node, skip)
                if n > MAX_FUNCTION_CODE_LINES:
                    found.append(f"{rel}:{node.lineno}: {node.name} has {n} lines of code")
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from mclstexp.tl.embed import embed_spots", "imports must go to lower layers"),
        ("def f():\n    from mclstexp.workflow import fold", "imports must go to lower layers"),
        ("from mclstexp.io.slide import _helper", "imports private"),
        ("import mclstexp.pp._secret", "imports private"),
        ("from . import x", "relative import"),
    ],
)
def test_the_checker_catches_what_it_must(source: str, expected: str) -> None:
    # as if in the train package: train may not import tl/workflow, nor private names
    found = _violations_in(source + "\n", "train", "mclstexp/train/probe.py")
    assert any(expected in v for v in found), found


def test_the_checker_accepts_the_house_style() -> None:
    ok = "from mclstexp import _keys\nfrom mclstexp.models.inputs import batch_sequences\n"
    assert _violations_in(ok, "train", "mclstexp/train/probe.py") == []


def test_the_layers_match_the_architecture_document() -> None:
    doc = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text()
    for units in LAYERS:
        for unit in units:
            if unit != "__main__":
                assert f"`{unit}`" in doc, f"docs/architecture.md does not mention `{unit}`"
