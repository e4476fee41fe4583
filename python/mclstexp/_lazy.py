"""Lazy attribute exports for subpackages, so importing a subpackage stays cheap."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Build ``__getattr__`` and ``__dir__`` for a package whose names live in submodules.

    Parameters
    ----------
    package
        The package's ``__name__``.
    exports
        Public name -> submodule (relative to ``package``) that defines it.

    Returns
    -------
    tuple
        ``(__getattr__, __dir__)`` to assign at module level.

    Examples
    --------
    >>> getattr_, dir_ = lazy_exports("mclstexp", {"MclstexpError": "exceptions"})
    >>> getattr_("MclstexpError").__name__
    'MclstexpError'
    """

    def __getattr__(name: str) -> Any:
        submodule = exports.get(name)
        if submodule is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{submodule}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
