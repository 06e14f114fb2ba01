"""Collectors register themselves by name; config fields and CLI flags come from here.

As in node_exporter, adding a collector is adding one module to this
package that decorates its class with :func:`register`: the module is found
by :func:`registered`, ``collectors.<name>`` appears in the config file and
``--collector.<name>`` / ``--no-collector.<name>`` on the command line.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_PACKAGE = "exporter.collectors"
# Modules of the package that hold no collector.
_INFRASTRUCTURE = frozenset({"base", "registry"})


@dataclass(frozen=True)
class Registration:
    name: str
    factory: Callable[[], Any]
    help: str
    default_enabled: bool = True


_REGISTRY: dict[str, Registration] = {}


def register(name: str, *, help: str, default_enabled: bool = True) -> Callable[[type], type]:
    """Class decorator: make ``cls`` (built with no arguments) the collector called ``name``."""
    if not name.isidentifier():
        raise ValueError(f"collector name {name!r} must be an identifier (it becomes a config field)")

    def decorate(cls: type) -> type:
        found = _REGISTRY.get(name)
        if found is not None and found.factory is not cls:
            raise ValueError(f"collector {name!r} is registered twice ({found.factory.__qualname__}, {cls.__qualname__})")
        if getattr(cls, "name", name) != name:
            raise ValueError(f"{cls.__qualname__}.name is {cls.name!r}, registered as {name!r}")
        _REGISTRY[name] = Registration(name, cls, help, default_enabled)
        return cls

    return decorate


def registered() -> dict[str, Registration]:
    """Every collector of the package, by name."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


@functools.cache
def _discover() -> None:
    """Import the package's collector modules, once: config, flags and the server all ask."""
    package = importlib.import_module(_PACKAGE)
    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in _INFRASTRUCTURE and not module.name.startswith("_"):
            importlib.import_module(f"{_PACKAGE}.{module.name}")
