"""Dashboard-level conventions shared by every dashboard.

- uids: ``clary-<tier>-<kind>`` for the twelve tier dashboards and
  ``clary-overview`` for the cross-tier one; they never change, because
  links, bookmarks and alert annotations point at them;
- a ``datasource`` template variable (type ``datasource``, query
  ``prometheus``) defaulting to the provisioned uid ``clary-prometheus``;
  every panel and target uses ``${datasource}``; then ``cluster``, ``job``
  and ``instance`` (:mod:`dashboards.variables`), on every query;
- tags ``clary``, the tier (or ``overview``) and the kind;
- links: each tier dashboard links to its tier's three other dashboards and
  to the Overview (explicit ``/d/<uid>`` links, keeping time range and
  variables); the Overview links to all twelve. Panel-level navigation
  (overview -> tier -> detail) and the firing-alert annotations are
  :mod:`dashboards.links`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import attr
from grafanalib import core as g

from exporter.catalog import TIERS

from .layout import Row, layout
from .links import firing_alerts, with_details
from .targets import DATASOURCE_UID, DATASOURCE_VAR
from .variables import selector_variables

KINDS: tuple[str, ...] = ("usage", "performance", "license", "feedback")
KIND_TITLES = {
    "usage": "Usage",
    "performance": "Performance",
    "license": "License",
    "feedback": "Feedback",
}
OVERVIEW_UID = "clary-overview"
OVERVIEW_FOLDER = "overview"
SCHEMA_VERSION = 39  # Grafana 10.3+; no legacy migrations run on load


def per_replica(what: str) -> str:
    """What a distinct-count panel says about replicas (active users, active licenses)."""
    return (f"Replicas sharing one PostgreSQL store (--database-url) each expose the deployment's distinct {what} "
            f"(the union of every replica's HyperLogLog sketches, refreshed every 15 s), so this max over replicas "
            f"is the deployment's count. Replicas each on their own SQLite file count only the {what} they saw "
            f"themselves: then it is the highest replica's count, a lower bound. Never summed (the same {what} "
            f"behind two replicas would count twice).")


def tier_title(tier: str) -> str:
    return tier.capitalize()


def uid_for(tier: str, kind: str) -> str:
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}")
    if kind not in KINDS:
        raise ValueError(f"unknown dashboard kind {kind!r}")
    return f"clary-{tier}-{kind}"


def title_for(tier: str, kind: str) -> str:
    return f"Clary {tier_title(tier)} - {KIND_TITLES[kind]}"


@attr.s
class DatasourceVariable(g.Template):
    """The ``datasource`` variable, written as current Grafana saves it."""

    def to_json_data(self):
        return {
            "current": {"selected": True, "text": "Prometheus", "value": self.default},
            "hide": 0,
            "includeAll": False,
            "label": self.label,
            "multi": False,
            "name": self.name,
            "options": [],
            "query": self.query,
            "refresh": 1,
            "regex": "",
            "skipUrlSync": False,
            "type": "datasource",
        }


def datasource_variable() -> DatasourceVariable:
    return DatasourceVariable(
        name=DATASOURCE_VAR,
        query="prometheus",
        type="datasource",
        default=DATASOURCE_UID,
        label="Data source",
    )


def link(uid: str, title: str) -> g.DashboardLink:
    return g.DashboardLink(
        type="link",
        title=title,
        uri=f"/d/{uid}",
        icon="dashboard",
        keepTime=True,
        includeVars=True,
        tooltip=f"Open {title}",
    )


def tier_links(tier: str, kind: str) -> list[g.DashboardLink]:
    links = [link(uid_for(tier, other), title_for(tier, other)) for other in KINDS if other != kind]
    links.append(link(OVERVIEW_UID, "Clary Overview"))
    return links


def overview_links() -> list[g.DashboardLink]:
    return [link(uid_for(tier, kind), title_for(tier, kind)) for tier in TIERS for kind in KINDS]


@dataclass(frozen=True)
class Built:
    """A dashboard and where its JSON lives under ``provisioning/dashboards``."""

    folder: str
    uid: str
    dashboard: g.Dashboard

    @property
    def path(self) -> str:
        return f"{self.folder}/{self.uid}.json"


def make_dashboard(
    *,
    uid: str,
    title: str,
    description: str,
    tags: list[str],
    rows: list[Row],
    links: list[g.DashboardLink],
    tier: str | None = None,
    details: Mapping[str, str] | None = None,
) -> g.Dashboard:
    """``details``: tile title -> title of the panel it links to (:func:`dashboards.links.with_details`)."""
    panels = with_details(uid, layout(rows), details or {})
    return g.Dashboard(
        uid=uid,
        title=title,
        description=description,
        tags=tags,
        panels=panels,
        links=links,
        annotations=firing_alerts(panels, tier),
        templating=g.Templating(list=[datasource_variable(), *selector_variables()]),
        time=g.Time("now-6h", "now"),
        refresh="1m",
        timezone="browser",
        graphTooltip=g.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
        schemaVersion=SCHEMA_VERSION,
        editable=True,
        version=1,
    )


def tier_dashboard(tier: str, kind: str, description: str, rows: list[Row],
                   details: Mapping[str, str] | None = None) -> Built:
    uid = uid_for(tier, kind)
    dashboard = make_dashboard(
        uid=uid,
        title=title_for(tier, kind),
        description=description,
        tags=["clary", tier, kind],
        rows=rows,
        links=tier_links(tier, kind),
        tier=tier,
        details=details,
    )
    return Built(folder=tier, uid=uid, dashboard=dashboard)
