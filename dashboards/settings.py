"""The config a build of the dashboards reads: the one :class:`mixin.config.Config` the rules read too.

:func:`using` sets it for one build, together with the PromQL scope that puts
``cluster=~"$cluster",job=~"$job",instance=~"$instance"`` (and any other
label of the selector) on every query the builder makes; kind modules read
thresholds with :func:`current`, so a panel colours a value where the alert
watching it fires. Outside :func:`using` the shipped defaults apply and no
selector is added.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from exporter.promql import scoped
from mixin.config import Config
from mixin.selector import dashboard_scope

_DEFAULT = Config()
_CONFIG: ContextVar[Config] = ContextVar("clary_dashboards_config")


def current() -> Config:
    """The config of the build in progress (the shipped defaults outside one)."""
    return _CONFIG.get(_DEFAULT)


@contextmanager
def using(cfg: Config | None = None) -> Iterator[Config]:
    """Build with ``cfg`` (default: the shipped config) and its selector on every query."""
    cfg = cfg or _DEFAULT
    token = _CONFIG.set(cfg)
    try:
        with scoped(dashboard_scope(cfg.selector_matchers, cfg.cluster_label)):
            yield cfg
    finally:
        _CONFIG.reset(token)
