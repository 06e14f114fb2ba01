"""Navigation in the rendered JSON: overview -> tier -> detail links that resolve, firing-alert annotations on the
time-series panels, and the host/GPU/collector rows collapsed with their panels inside."""

from __future__ import annotations

import re
from itertools import pairwise

from dashboards.links import KEEP
from tests.dashboards.helpers import KINDS, TIERS, data_panels, panels_of, tier_of

LINK = re.compile(r"^/d/(?P<uid>[^?]+)\?(?:viewPanel=(?P<panel>\d+)&)?(?P<rest>.*)$")
COLLAPSED = ("System", "GPU", "Collector health")
TILES = {"stat", "gauge"}


def links_of(panel: dict) -> list[dict]:
    data_links = panel.get("fieldConfig", {}).get("defaults", {}).get("links", [])
    return [*panel.get("links", []), *data_links]


def resolve(url: str, dashboards: dict) -> list[tuple[str, int | None]]:
    """(uid, viewPanel) for each tier a link may lead to; fails on a link that keeps neither time nor variables."""
    match = LINK.match(url)
    assert match, url
    assert match.group("rest") == KEEP, f"{url}: does not keep the time range and variables"
    panel = int(match.group("panel")) if match.group("panel") else None
    uids = [match.group("uid").replace("${__field.labels.tier}", tier) for tier in TIERS]
    for uid in set(uids):
        assert uid in dashboards, f"{url} leads to unknown dashboard {uid}"
        if panel is not None:
            assert panel in {p["id"] for p in panels_of(dashboards[uid])}, f"{url}: no panel {panel} in {uid}"
    return [(uid, panel) for uid in dict.fromkeys(uids)]


def test_every_overview_panel_leads_to_the_tier_dashboards(dashboards):
    overview = dashboards["clary-overview"]
    panels = [p for p in data_panels(overview) if p["type"] != "text"]
    assert len(panels) > 15
    kinds_reached = set()
    for panel in panels:
        links = links_of(panel)
        assert links, f"overview panel {panel['title']!r} links nowhere"
        reached = {uid for link in links for uid, _ in resolve(link["url"], dashboards)}
        assert {tier_of(uid) for uid in reached} == set(TIERS), (panel["title"], reached)
        kinds_reached |= {uid.split("-")[2] for uid in reached}
        data_links = panel.get("fieldConfig", {}).get("defaults", {}).get("links", [])
        if data_links:  # ${__field.labels.tier} needs a tier label on every series
            assert all("{{tier}}" in t["legendFormat"] for t in panel["targets"]), panel["title"]
    assert kinds_reached == set(KINDS)
    by_title = {p["title"]: p for p in panels}
    assert links_of(by_title["Soonest license expiry"])[0]["url"].startswith("/d/clary-${__field.labels.tier}-license?")
    assert links_of(by_title["Request rate by tier"])[0]["url"].startswith(
        "/d/clary-${__field.labels.tier}-performance?")


def test_tiles_on_tier_dashboards_lead_to_their_detail_panel(dashboards):
    for uid, d in dashboards.items():
        if tier_of(uid) is None:
            continue
        by_id = {p["id"]: p for p in panels_of(d)}
        details = 0
        for panel in data_panels(d):
            for link in links_of(panel):
                assert panel["type"] in TILES, f"{uid}: {panel['title']!r} ({panel['type']}) has a link"
                ((target_uid, target_id),) = set(resolve(link["url"], dashboards))
                assert target_uid == uid and target_id is not None
                target = by_id[target_id]
                assert target["type"] not in TILES | {"row"}, f"{uid}: {panel['title']!r} -> {target['title']!r}"
                assert link["title"] == f"Details: {target['title']}"
                details += 1
        assert details >= 3, f"{uid}: only {details} tiles lead to a detail panel"
    soonest = next(p for p in panels_of(dashboards["clary-lite-license"]) if p["title"] == "Soonest expiry")
    assert links_of(soonest)[0]["title"] == "Details: Days to expiry per license"


def test_firing_alerts_are_drawn_on_every_time_series_panel(dashboards):
    for uid, d in dashboards.items():
        annotations = d["annotations"]["list"]
        (alerts,) = [a for a in annotations if "ALERTS" in a.get("expr", "")]
        tier = tier_of(uid)
        wanted = f'ALERTS{{alertstate="firing",tier=~"{tier}|"}}' if tier else 'ALERTS{alertstate="firing"}'
        assert alerts["expr"] == wanted
        assert alerts["enable"] and not alerts["hide"] and alerts["titleFormat"] == "{{alertname}}"
        assert alerts["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        series = sorted(p["id"] for p in panels_of(d) if p["type"] == "timeseries")
        assert series and alerts["filter"] == {"exclude": False, "ids": series}
        assert any(a.get("builtIn") == 1 for a in annotations)  # Grafana's own annotations stay


def test_host_gpu_and_collector_rows_are_collapsed_with_their_panels_inside(dashboards):
    for tier in TIERS:
        d = dashboards[f"clary-{tier}-performance"]
        rows = {p["title"]: p for p in d["panels"] if p["type"] == "row"}
        for title, row in rows.items():
            assert row["collapsed"] is (title in COLLAPSED), f"{tier}: row {title!r}"
            if not row["collapsed"]:
                assert row["panels"] == []
                continue
            inside = row["panels"]
            assert inside, f"{tier}: collapsed row {title!r} is empty"
            assert {p["id"] for p in inside} == {row["id"] + i for i in range(1, len(inside) + 1)}
            lines: dict[int, int] = {}
            for panel in inside:
                assert panel["gridPos"]["y"] > row["gridPos"]["y"]
                lines[panel["gridPos"]["y"]] = lines.get(panel["gridPos"]["y"], 0) + panel["gridPos"]["w"]
            assert set(lines.values()) == {24}, f"{tier}: {title!r} lines {lines}"
        # A collapsed row takes one line: the next one starts right below it.
        top = [p for p in d["panels"] if p["type"] == "row"]
        for row, after in pairwise(top):
            if row["collapsed"]:
                assert after["gridPos"]["y"] == row["gridPos"]["y"] + 1
        assert [p["title"] for p in top][-3:] == list(COLLAPSED)
    for uid, d in dashboards.items():
        if not uid.endswith("-performance"):
            assert not any(p.get("collapsed") for p in d["panels"]), uid
