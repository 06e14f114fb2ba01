"""What the dashboard tests share: the expected files, Grafana's vocabulary, and walks over rendered JSON."""

from __future__ import annotations

import re
from functools import cache

import yaml

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

# A catalog name, not the middle of a recorded series' name (level:clary_...:operations).
METRIC = re.compile(r"(?<![:\w])clary_[a-z0-9_]+(?![\w:])")
SELECTOR = re.compile(r"(?<![:\w])(clary_[a-z0-9_]+)(?![\w:])(\{[^}]*\})?")
RECORDED = re.compile(r"(?<![\w:])([a-z_]+:clary_[a-z0-9_]+:[a-z0-9_]+)(\{[^}]*\})?")
RANGE_FN = re.compile(r"\b([a-z_]+)\((clary_[a-z0-9_]+(?:\{[^}]*\})?)\[([^\]]+)\]\)")
RATE_INTERVAL = "$__rate_interval"


@cache
def recorded_sources() -> dict[str, frozenset[str]]:
    """Every series the generated rules (alerts/rules/*.yml) record -> the catalog names it is computed from."""
    exprs = {}
    for path in sorted((ROOT / "alerts" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            exprs.update({rule["record"]: rule["expr"] for rule in group["rules"] if "record" in rule})

    def sources(name: str, seen: frozenset = frozenset()) -> frozenset[str]:
        expr = exprs[name]
        found = set(METRIC.findall(expr))
        for inner, _ in RECORDED.findall(expr):
            if inner not in seen:
                found |= sources(inner, seen | {name})
        return frozenset(found)

    return {name: sources(name) for name in exprs}


def names_read(expr: str) -> set[str]:
    """The catalog names a query reads, directly or through the recorded series it selects."""
    found = set(METRIC.findall(expr))
    for name, _ in RECORDED.findall(expr):
        found |= recorded_sources()[name]
    return found


# What the builder's scope puts on every query (dashboards.settings): the selector's variables.
SCOPE_MATCHERS = re.compile(r'(cluster=~"\$cluster"|job=~"\$job"|instance=~"\$instance"),?')


def unscoped(expr: str) -> str:
    """``expr`` without the variables' matchers, to compare with the queries as the kind modules write them."""
    return SCOPE_MATCHERS.sub("", expr).replace("{}", "")


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
