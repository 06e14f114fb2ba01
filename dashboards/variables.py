"""The ``cluster``, ``job`` and ``instance`` template variables, after ``datasource``.

Their choices come from ``up`` of the config's selector (``job="clary-exporter"``
by default), each narrowed by the ones before it; every panel query carries
``cluster=~"$cluster",job=~"$job",instance=~"$instance"`` (the builder's
scope, :mod:`dashboards.settings`). "All" of ``cluster`` and ``instance`` is
``.*``, which also matches series without the label (a single-cluster
Prometheus has no ``cluster`` label at all); "All" of ``job`` is the jobs the
selector found.
"""

from __future__ import annotations

import attr
from grafanalib import core as g

from exporter.promql import Match, selector
from mixin.selector import DASHBOARD_VARIABLES

from .settings import current
from .targets import DS

LABELS = {"cluster": "Cluster", "job": "Job", "instance": "Instance"}


@attr.s
class QueryVariable(g.Template):
    """A Prometheus ``label_values`` variable, written as current Grafana saves it."""

    def to_json_data(self):
        return {
            "allValue": self.allValue,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "datasource": DS,
            "definition": self.query,
            "hide": 0,
            "includeAll": True,
            "label": self.label,
            "multi": True,
            "name": self.name,
            "options": [],
            "query": {"query": self.query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "refresh": 2,  # on time range change: replicas come and go
            "regex": "",
            "skipUrlSync": False,
            "sort": 1,
            "type": "query",
        }


def selector_variables() -> list[QueryVariable]:
    """``cluster``, ``job``, ``instance``: each lists the values of ``up`` of the selector, narrowed by the previous."""
    cfg = current()
    label_of = {"cluster": cfg.cluster_label, "job": "job", "instance": "instance"}
    static = dict(cfg.selector_matchers)  # job="clary-exporter" and any other label of the selector
    out, before = [], {}
    for name in DASHBOARD_VARIABLES:
        query = f"label_values({selector('up', {**static, **before})}, {label_of[name]})"
        out.append(QueryVariable(
            name=name,
            query=query,
            label=LABELS[name],
            allValue=None if name == "job" else ".*",
            type="query",
        ))
        before[label_of[name]] = Match("=~", f"${name}")
    return out
