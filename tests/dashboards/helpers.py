"""What the dashboard tests share: the expected files, Grafana's vocabulary, and walks over rendered JSON."""

from __future__ import annotations

import re

from dashboards import queries
from tests.support import ROOT

COMMITTED = ROOT / "provisioning" / "dashboards"
DATASOURCES = ROOT / "provisioning" / "datasources"

TIERS = ("lite", "standard", "professional")
KINDS = ("usage", "performance", "license", "feedback")
EXPECTED_FILES = {f"{t}/clary-{t}-{k}.json" for t in TIERS for k in KINDS} | {"overview/clary-overview.json"}

ALLOWED_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "heatmap", "histogram", "piechart", "text"}
LAYOUT_TYPES = {"row"}
# Grafana unit ids the dashboards may use (a typo such as "seconds" fails).
KNOWN_UNITS = {"s", "bytes", "Bps", "percentunit", "reqps", "ops", "short", "d", "celsius", "watt", "hertz", "joule"}

METRIC = re.compile(r"clary_[a-z0-9_]+")
SELECTOR = re.compile(r"(clary_[a-z0-9_]+)(\{[^}]*\})?")
RANGE_FN = re.compile(r"\b([a-z_]+)\((clary_[a-z0-9_]+(?:\{[^}]*\})?)\[([^\]]+)\]\)")
RATE_INTERVAL = "$__rate_interval"


def panels_of(dashboard: dict) -> list[dict]:
    return list(queries.iter_panels(dashboard["panels"]))


def data_panels(dashboard: dict) -> list[dict]:
    return [p for p in panels_of(dashboard) if p["type"] not in LAYOUT_TYPES]


def targets_of(dashboard: dict):
    for panel in panels_of(dashboard):
        for target in panel.get("targets") or []:
            yield panel, target


def all_targets(dashboards):
    for uid, d in sorted(dashboards.items()):
        for panel, target in targets_of(d):
            yield uid, panel, target


def tier_of(uid: str) -> str | None:
    parts = uid.split("-")
    return parts[1] if len(parts) == 3 else None
