"""The instrumentation library that Clary services import: the public names in one place.

    from exporter.instrument import Hasher, Identity, Recorder, instrument, key_table_resolver

Names load lazily (PEP 562), so an aiohttp service does not import the ASGI
integration or the event client it does not use. Modules below this package
are the implementation; their names may move, these do not.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_PUBLIC = {
    "Recorder": "exporter.instrument.recorder",
    "Timed": "exporter.instrument.recorder",
    "Hasher": "exporter.instrument.hashing",
    "Identity": "exporter.instrument.identity",
    "ANONYMOUS": "exporter.instrument.identity",
    "Resolver": "exporter.instrument.identity",
    "key_table_resolver": "exporter.instrument.identity",
    "IDENTITY": "exporter.instrument.aiohttp_middleware",
    "instrument": "exporter.instrument.aiohttp_middleware",
    "metrics_middleware": "exporter.instrument.aiohttp_middleware",
    "route_template": "exporter.instrument.aiohttp_middleware",
    "MetricsMiddleware": "exporter.instrument.asgi",
    "get_identity": "exporter.instrument.asgi",
    "EventClient": "exporter.instrument.client",
    "IngestError": "exporter.instrument.client",
    "Renderer": "exporter.instrument.exposition",
    "LabelRejected": "exporter.labels",
}
_MODULES = ("multiprocess",)

__all__ = sorted([*_PUBLIC, *_MODULES])


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    try:
        module = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    # ruff: noqa: F401 - re-exported names
    from exporter.instrument import multiprocess
    from exporter.instrument.aiohttp_middleware import IDENTITY, instrument, metrics_middleware, route_template
    from exporter.instrument.asgi import MetricsMiddleware, get_identity
    from exporter.instrument.client import EventClient, IngestError
    from exporter.instrument.exposition import Renderer
    from exporter.instrument.hashing import Hasher
    from exporter.instrument.identity import ANONYMOUS, Identity, Resolver, key_table_resolver
    from exporter.instrument.recorder import Recorder, Timed
    from exporter.labels import LabelRejected
