"""Panel queries and the Prometheus targets they become.

Kind modules write queries as :class:`Q` (``instant`` and ``table_q`` for the
"in the selected time range" shapes); :func:`prom_targets` turns a panel's
queries into targets in the JSON shape current Grafana saves, all pointing at
the ``${datasource}`` variable. Kept apart from the panel helpers so that
modules needing only the data source (``common``, ``queries``) do not import
them.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import attr
from grafanalib import core as g

DATASOURCE_UID = "clary-prometheus"
DATASOURCE_VAR = "datasource"
DS = {"type": "prometheus", "uid": "${%s}" % DATASOURCE_VAR}


@dataclass(frozen=True)
class Q:
    """One PromQL query of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False
    fmt: str = "time_series"  # time_series | table | heatmap


def instant(expr: str, legend: str = "", fmt: str = "time_series") -> Q:
    return Q(expr, legend, instant=True, fmt=fmt)


def table_q(expr: str) -> Q:
    return Q(expr, "", instant=True, fmt="table")


@attr.s
class PromTarget(g.Target):
    """A Prometheus target in the shape current Grafana saves."""

    def to_json_data(self):
        return {
            "datasource": DS,
            "editorMode": "code",
            "expr": self.expr,
            "format": self.format,
            "instant": self.instant,
            "legendFormat": self.legendFormat,
            "range": not self.instant,
            "refId": self.refId,
        }


def prom_targets(queries: tuple[Q, ...]) -> list[PromTarget]:
    """One target per query, refIds A, B, C... in order."""
    if not queries:
        raise ValueError("a data panel needs at least one query")
    if len(queries) > len(string.ascii_uppercase):
        raise ValueError("too many queries in one panel")
    return [
        PromTarget(
            expr=q.expr,
            legendFormat=q.legend,
            refId=string.ascii_uppercase[i],
            instant=q.instant,
            format=q.fmt,
        )
        for i, q in enumerate(queries)
    ]
