"""Package attributes loaded from their modules on first use (PEP 562), so importing the package stays light."""

from __future__ import annotations

from collections.abc import Callable, Mapping


def lazy_getattr(package: str, table: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: attribute ``name`` is the attribute of the same name of the
    module ``table[name]``, imported when first asked for."""

    def __getattr__(name: str) -> object:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        import importlib

        return getattr(importlib.import_module(module), name)

    return __getattr__
