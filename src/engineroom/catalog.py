"""The modules this distribution ships, by name, loaded lazily.

Each entry points at a ``Module`` object (``package.module:attribute``). ``serve
--modules a,b`` selects a subset so the same code runs as separate services.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping

from engineroom.core.module import Module

# Domain modules register here as they land (identity, blog, shop, chat, analytics).
AVAILABLE_MODULES: Mapping[str, str] = {
    "identity": "engineroom.identity:module",
    "blog": "engineroom.blog:module",
    "chat": "engineroom.chat:module",
}


class UnknownModuleError(ValueError):
    pass


def parse_module_names(value: str | None) -> list[str] | None:
    """``"identity, blog"`` -> ``["identity", "blog"]``; empty or ``None`` -> all modules."""
    if value is None or not value.strip():
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in AVAILABLE_MODULES]
    if unknown:
        known = ", ".join(sorted(AVAILABLE_MODULES)) or "none yet"
        raise UnknownModuleError(f"unknown module(s): {', '.join(unknown)} (available: {known})")
    return names


def load_modules(names: Iterable[str] | None = None) -> list[Module]:
    selected = list(AVAILABLE_MODULES) if names is None else list(names)
    modules: list[Module] = []
    for name in selected:
        target = AVAILABLE_MODULES.get(name)
        if target is None:
            raise UnknownModuleError(f"unknown module: {name}")
        module_path, _, attribute = target.partition(":")
        module = getattr(importlib.import_module(module_path), attribute)
        if not isinstance(module, Module):
            raise TypeError(f"{target} is not a Module")
        modules.append(module)
    return modules


def peers_of(selected: Iterable[Module]) -> list[Module]:
    """Catalog modules not in ``selected``: served by other processes in a split topology."""
    names = {module.name for module in selected}
    return [module for module in load_modules() if module.name not in names]
