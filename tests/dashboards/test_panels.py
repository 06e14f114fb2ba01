"""Panel conventions of the rendered dashboards: types, units, descriptions, ids, layout, datasource, rows, links."""

from __future__ import annotations

import json

from dashboards.targets import DATASOURCE_UID
from tests.dashboards.helpers import (ALLOWED_TYPES, KINDS, KNOWN_UNITS, LAYOUT_TYPES, TIERS, data_panels, panels_of,
                                      tier_of)


def test_only_current_react_panel_types(dashboards):
    seen = set()
    for uid, d in dashboards.items():
        for panel in panels_of(d):
            assert panel["type"] in ALLOWED_TYPES | LAYOUT_TYPES, f"{uid}: {panel['title']!r} is {panel['type']}"
            seen.add(panel["type"])
    assert "graph" not in seen and "singlestat" not in seen
    # Every allowed visualization is actually exercised somewhere.
    assert seen == ALLOWED_TYPES | LAYOUT_TYPES


def test_every_data_panel_has_a_known_unit(dashboards):
    for uid, d in dashboards.items():
        for panel in data_panels(d):
            if panel["type"] == "text":
                assert not panel.get("targets"), f"{uid}: text panel with queries"
                continue
            unit = panel["fieldConfig"]["defaults"].get("unit")
            assert unit in KNOWN_UNITS, f"{uid}: {panel['title']!r} has unit {unit!r}"
            if panel["type"] == "heatmap":
                assert panel["options"]["yAxis"]["unit"] == unit
                assert panel["options"]["calculate"] is False


def test_every_panel_has_a_description(dashboards):
    for uid, d in dashboards.items():
        for panel in data_panels(d):
            assert isinstance(panel.get("description"), str) and len(panel["description"]) > 15, (
                f"{uid}: {panel['title']!r} lacks a description"
            )
            assert panel["title"], f"{uid}: untitled panel"


def test_panel_ids_unique_and_stable(dashboards):
    for uid, d in dashboards.items():
        ids = [p["id"] for p in panels_of(d)]
        assert all(isinstance(i, int) and i > 0 for i in ids), uid
        assert len(ids) == len(set(ids)), f"{uid}: duplicate panel ids"
        row_id = None
        for panel in d["panels"]:
            if panel["type"] == "row":
                row_id = panel["id"]
                assert row_id % 100 == 0
            else:
                assert row_id is not None and row_id < panel["id"] < row_id + 100, uid


def test_grid_positions_do_not_overlap(dashboards):
    for uid, d in dashboards.items():
        cells = set()
        for panel in d["panels"]:
            pos = panel["gridPos"]
            assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, f"{uid}: {panel['title']}"
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    assert (x, y) not in cells, f"{uid}: {panel['title']!r} overlaps"
                    cells.add((x, y))


def test_every_line_of_panels_fills_the_width(dashboards):
    for uid, d in dashboards.items():
        lines: dict[int, int] = {}
        for panel in d["panels"]:
            if panel["type"] != "row":
                lines[panel["gridPos"]["y"]] = lines.get(panel["gridPos"]["y"], 0) + panel["gridPos"]["w"]
        ragged = {y: w for y, w in lines.items() if w != 24}
        assert not ragged, f"{uid}: lines at y={sorted(ragged)} do not fill 24 columns"


def test_datasource_variable_and_panel_datasources(dashboards):
    for uid, d in dashboards.items():
        var, *selector_vars = d["templating"]["list"]
        assert [v["name"] for v in selector_vars] == ["cluster", "job", "instance"]  # tests/dashboards/test_config.py
        assert var["name"] == "datasource" and var["type"] == "datasource" and var["query"] == "prometheus"
        assert var["current"]["value"] == DATASOURCE_UID == "clary-prometheus"
        for panel in data_panels(d):
            if panel["type"] == "text":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, uid
            for target in panel["targets"]:
                assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, uid
                assert target["refId"]


TIER_ROWS = {
    "clary-lite-usage": ["Lite: basic document metrics", "Lite: upgrade potential"],
    "clary-lite-license": ["Lite: API usage against limits"],
    "clary-standard-usage": ["Standard: advanced feature adoption", "Standard: upgrade potential"],
    "clary-standard-performance": ["Standard: local model usage and performance"],
    "clary-professional-usage": [
        "Professional: cloud LLM usage", "Professional: custom templates",
        "Professional: enterprise feature adoption",
    ],
    "clary-professional-performance": ["Professional: cloud LLM performance"],
}


def test_tier_specific_rows(dashboards):
    all_rows = {uid: [p["title"] for p in d["panels"] if p["type"] == "row"] for uid, d in dashboards.items()}
    for uid, rows in TIER_ROWS.items():
        for row in rows:
            assert row in all_rows[uid], f"{uid} lacks row {row!r}"
    # A tier's rows stay on that tier's dashboards.
    for uid, rows in all_rows.items():
        tier = tier_of(uid)
        for row in rows:
            prefix = row.split(":")[0].lower()
            if prefix in TIERS:
                assert prefix == tier, f"{uid} has row {row!r}"
    pro = json.dumps(dashboards["clary-professional-usage"]) + json.dumps(dashboards["clary-professional-performance"])
    for family in ("clary_llm_tokens_total", "clary_llm_time_to_first_token_seconds",
                   "clary_llm_request_duration_seconds", "clary_template_uses_total"):
        assert family in pro
    assert "clary_llm_tokens_total" not in json.dumps(dashboards["clary-lite-usage"])


def test_links_between_a_tiers_dashboards_resolve(dashboards):
    uids = set(dashboards)
    for uid, d in dashboards.items():
        targets = set()
        for link in d["links"]:
            assert link["type"] == "link" and link["url"].startswith("/d/"), uid
            target = link["url"][len("/d/"):]
            assert target in uids, f"{uid} links to unknown {target}"
            assert link["keepTime"] and link["includeVars"]
            targets.add(target)
        tier = tier_of(uid)
        if tier is None:
            assert targets == uids - {uid}
        else:
            siblings = {f"clary-{tier}-{k}" for k in KINDS} - {uid}
            assert targets == siblings | {"clary-overview"}
    overview = json.dumps(dashboards["clary-overview"])
    for uid in uids - {"clary-overview"}:
        assert f"(/d/{uid})" in overview  # the markdown directory panel
