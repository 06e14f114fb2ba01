"""Every PromQL query of every dashboard, ready to send to Prometheus.

``all_queries()`` reads the rendered JSON (exactly what is provisioned) and
returns ``(dashboard uid, panel title, expr)`` for every target, with Grafana
variables replaced by :func:`substitute`, so a test can run each query
against a real Prometheus.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

from mixin.config import Config

from .targets import DATASOURCE_UID

# Longest names first so that $__range_s is not read as $__range + "_s".
_VARIABLE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::[A-Za-z]+)?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def substitute(
    expr: str,
    rate_interval: str = "1m",
    *,
    interval: str = "15s",
    range_: str = "1h",
    datasource: str = DATASOURCE_UID,
    job: str | None = None,
) -> str:
    """Replace Grafana's variables with concrete values.

    Handles ``$__rate_interval``, ``$__interval`` (and ``_ms``), ``$__range``
    (and ``_s``, ``_ms``), ``$__from``/``$__to``, ``$datasource`` and the
    selector's variables as "All" leaves them (``$cluster`` and ``$instance``:
    ``.*``; ``$job``: ``job``, by default the shipped selector's job), bare or
    braced (``${...}``). An unknown variable raises ValueError instead of
    reaching Prometheus as a confusing parse error.
    """
    range_seconds = _seconds(range_)
    values = {
        "__rate_interval": rate_interval,
        "__interval": interval,
        "__interval_ms": str(int(_seconds(interval) * 1000)),
        "__range": range_,
        "__range_s": str(int(range_seconds)),
        "__range_ms": str(int(range_seconds * 1000)),
        "__from": "0",
        "__to": str(int(range_seconds * 1000)),
        "datasource": datasource,
        "cluster": ".*",
        "job": job if job is not None else Config().job,
        "instance": ".*",
    }

    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        if name not in values:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def _seconds(duration: str) -> float:
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a duration: {duration!r}")
    for number, unit in parts:
        total += float(number) * _UNITS[unit]
    return total


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard's JSON, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels") or [])


def raw_queries() -> list[tuple[str, str, str]]:
    """(uid, panel title, expr) with Grafana variables left in place."""
    from .build import all_dashboards, render

    out = []
    for built in all_dashboards():
        data = json.loads(render(built))
        for panel in iter_panels(data["panels"]):
            for target in panel.get("targets") or []:
                out.append((data["uid"], panel["title"], target["expr"]))
    return out


def all_queries(rate_interval: str = "1m", **kwargs: str) -> list[tuple[str, str, str]]:
    """(uid, panel title, expr) for every target, variables substituted."""
    return [
        (uid, title, substitute(expr, rate_interval, **kwargs))
        for uid, title, expr in raw_queries()
    ]
