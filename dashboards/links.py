"""Navigation: overview -> tier -> detail, and firing alerts drawn on the graphs.

- The Overview's panels link to the tier dashboards: a panel split by tier
  gets a *data link* (click a tier's bar or line) to that tier's dashboard
  of the panel's kind (``/d/clary-${__field.labels.tier}-<kind>``); a panel
  without a tier label gets *panel links* to the three tier dashboards.
- On a tier dashboard, a tile (stat or gauge) links to the panel that
  explains it (``viewPanel=<id>``), e.g. "Soonest expiry" to the table of
  days to expiry per license. The pairs are declared by title in each kind
  module and resolved after the layout has given panels their ids, so a
  renamed or removed panel fails the build instead of a link.
- Every link keeps the time range and every variable
  (``${__url_time_range}``, ``${__all_variables}``).
- A dashboard annotation query draws ``ALERTS{alertstate="firing"}`` (on a
  tier dashboard: the tier's alerts and those without a tier) on the
  time-series panels, with the alert name as title and its labels as tags.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import attr
from grafanalib import core as g

from exporter.catalog import TIERS

from .layout import Row
from .targets import DS

KEEP = "${__url_time_range}&${__all_variables}"
TILE_TYPES = frozenset({"stat", "gauge"})
TIME_SERIES_TYPES = frozenset({"timeseries"})


def url(uid: str, **params: object) -> str:
    """``/d/<uid>?viewPanel=...&<time range>&<variables>``: a link that keeps where the reader is."""
    query = "".join(f"{name}={value}&" for name, value in params.items())
    return f"/d/{uid}?{query}{KEEP}"


def _merged(base: Mapping[str, Any] | None, extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base or {})
    for key, value in extra.items():
        out[key] = _merged(out.get(key), value) if isinstance(value, Mapping) else value
    return out


def _panel_type(panel: Any) -> str:
    return getattr(panel, "panelType", "") or panel.to_json_data()["type"]


def _by_tier(panel: Any) -> bool:
    return any("{{tier}}" in (target.legendFormat or "") for target in panel.targets)


def _linked(panel: Any) -> bool:
    return bool(panel.links or (panel.extraJson or {}).get("fieldConfig", {}).get("defaults", {}).get("links"))


def to_tiers(panel: Any, kind: str) -> Any:
    """``panel`` linking to the tier dashboards of ``kind``: by data link when it is split by tier.

    A panel that already links somewhere, or a text panel, is left as it is.
    """
    if _linked(panel) or _panel_type(panel) == "text":
        return panel
    if _by_tier(panel):
        link = {"title": f"Open the ${{__field.labels.tier}} {kind} dashboard",
                "url": url(f"clary-${{__field.labels.tier}}-{kind}"), "targetBlank": False}
        extra = {"fieldConfig": {"defaults": {"links": [link]}}}
        return attr.evolve(panel, extraJson=_merged(panel.extraJson, extra))
    links = [{"title": f"{tier.capitalize()} {kind}", "url": url(f"clary-{tier}-{kind}"), "targetBlank": False}
             for tier in TIERS]
    return attr.evolve(panel, links=links)


def rows_to_tiers(rows: Iterable[Row], kinds: Mapping[str, str], default: str) -> list[Row]:
    """Every panel linked to the tier dashboards of its kind: ``kinds`` by panel title, else by row title."""
    return [replace(row, panels=[to_tiers(p, kinds.get(p.title) or kinds.get(row.title, default))
                                 for p in row.panels]) for row in rows]


def _walk(panels: list[Any]) -> Iterator[Any]:
    for panel in panels:
        yield panel
        yield from _walk(getattr(panel, "panels", None) or [])


def _replace(panels: list[Any], new: Mapping[int, Any]) -> list[Any]:
    out = []
    for panel in panels:
        panel = new.get(panel.id, panel)
        if isinstance(panel, g.RowPanel) and panel.panels:
            panel = attr.evolve(panel, panels=_replace(panel.panels, new))
        out.append(panel)
    return out


def with_details(uid: str, panels: list[Any], details: Mapping[str, str]) -> list[Any]:
    """Laid-out ``panels`` whose tiles link to their detail panel: ``details`` maps tile title -> panel title."""
    tiles: dict[str, list[Any]] = {}
    others: dict[str, list[Any]] = {}
    for panel in _walk(panels):
        kind = _panel_type(panel)
        if kind != "row":
            (tiles if kind in TILE_TYPES else others).setdefault(panel.title, []).append(panel)
    new = {}
    for tile_title, target_title in details.items():
        sources, targets = tiles.get(tile_title, []), others.get(target_title, [])
        if not sources or len(targets) != 1:
            raise ValueError(f"{uid}: detail link {tile_title!r} -> {target_title!r}: "
                             f"{len(sources)} tile(s), {len(targets)} target panel(s); need >= 1 and exactly 1")
        link = {"title": f"Details: {target_title}", "url": url(uid, viewPanel=targets[0].id), "targetBlank": False}
        for source in sources:
            new[source.id] = attr.evolve(source, links=[*source.links, link])
    return _replace(panels, new)


def firing_alerts(panels: list[Any], tier: str | None = None) -> g.Annotations:
    """Grafana's built-in annotations, and firing alerts (of ``tier`` and untiered) on the time-series panels."""
    tier_filter = f',tier=~"{tier}|"' if tier else ""
    ids = sorted(p.id for p in _walk(panels) if _panel_type(p) in TIME_SERIES_TYPES)
    return g.Annotations(list=[
        {
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        },
        {
            "datasource": DS,
            "enable": True,
            "expr": f'ALERTS{{alertstate="firing"{tier_filter}}}',
            "filter": {"exclude": False, "ids": ids},
            "hide": False,
            "iconColor": "red",
            "name": "Firing alerts",
            "step": "1m",
            "tagKeys": "severity,team,tier",
            "textFormat": "{{alertname}} ({{severity}}) {{tier}}",
            "titleFormat": "{{alertname}}",
            "useValueForTime": False,
        },
    ])
