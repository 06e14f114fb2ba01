"""The generated Grafana dashboards: files, conventions, catalog names, CLI.

Everything is checked on the JSON as rendered (what Grafana provisions), not
on the grafanalib objects. Nothing here writes into the repository: builds go
to pytest's tmp_path.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dashboards import build as dbuild
from dashboards import cli, queries
from dashboards.targets import DATASOURCE_UID
from exporter.promql import m, one_of, regex
from exporter.catalog import BY_NAME, Kind, exposed_name_index

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "provisioning" / "dashboards"
DATASOURCES = ROOT / "provisioning" / "datasources"

TIERS = ("lite", "standard", "professional")
KINDS = ("usage", "performance", "license", "feedback")
EXPECTED_FILES = {f"{t}/clary-{t}-{k}.json" for t in TIERS for k in KINDS} | {"overview/clary-overview.json"}

ALLOWED_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "heatmap", "histogram", "piechart", "text"}
LAYOUT_TYPES = {"row"}
# Grafana unit ids the dashboards may use (a typo such as "seconds" fails).
KNOWN_UNITS = {"s", "bytes", "Bps", "percentunit", "reqps", "ops", "short", "d", "celsius", "watt"}

METRIC = re.compile(r"clary_[a-z0-9_]+")
SELECTOR = re.compile(r"(clary_[a-z0-9_]+)(\{[^}]*\})?")
RANGE_FN = re.compile(r"\b([a-z_]+)\((clary_[a-z0-9_]+(?:\{[^}]*\})?)\[([^\]]+)\]\)")
RATE_INTERVAL = "$__rate_interval"


# --- fixtures -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return dbuild.generate()


@pytest.fixture(scope="module")
def dashboards(rendered) -> dict[str, dict]:
    """uid -> parsed dashboard JSON."""
    out = {}
    for text in rendered.values():
        data = json.loads(text)
        out[data["uid"]] = data
    return out


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


# --- files, uids, folders -----------------------------------------------------------

def test_thirteen_dashboards_in_tier_folders(tmp_path, dashboards):
    assert cli.main(["build", "--out", str(tmp_path)]) == 0
    files = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert files == EXPECTED_FILES
    for rel in EXPECTED_FILES:
        data = json.loads((tmp_path / rel).read_text())
        assert data["uid"] == Path(rel).stem
        folder = rel.split("/")[0]
        assert folder == (tier_of(data["uid"]) or "overview")
    assert len(dashboards) == 13


def test_committed_tree_has_exactly_the_generated_files():
    files = {str(p.relative_to(COMMITTED)) for p in COMMITTED.rglob("*.json")}
    assert files == EXPECTED_FILES


def test_titles_tags_and_schema(dashboards):
    for uid, d in dashboards.items():
        tier = tier_of(uid)
        if tier is None:
            assert d["title"] == "Clary Overview"
            assert d["tags"] == ["clary", "overview"]
        else:
            kind = uid.split("-")[2]
            assert d["title"] == f"Clary {tier.capitalize()} - {kind.capitalize()}"
            assert d["tags"] == ["clary", tier, kind]
        assert d["schemaVersion"] >= 36, uid
        assert d["description"], uid
        assert d["rows"] == [], f"{uid}: legacy rows"


# --- panel conventions --------------------------------------------------------------

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
        (var,) = d["templating"]["list"]
        assert var["name"] == "datasource" and var["type"] == "datasource" and var["query"] == "prometheus"
        assert var["current"]["value"] == DATASOURCE_UID == "clary-prometheus"
        for panel in data_panels(d):
            if panel["type"] == "text":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, uid
            for target in panel["targets"]:
                assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, uid
                assert target["refId"]


# --- queries ------------------------------------------------------------------------

def test_every_expr_uses_only_catalog_metrics(dashboards):
    index = exposed_name_index()
    used = set()
    for uid, panel, target in all_targets(dashboards):
        names = METRIC.findall(target["expr"])
        assert names, f"{uid}: {panel['title']!r} queries no Clary metric: {target['expr']}"
        for name in names:
            assert name in index, f"{uid}: {panel['title']!r} uses {name}, not in the catalog"
            used.add(index[name])
    # Sanity: the parser sees through histogram series (_bucket, _sum, _count).
    assert {"clary_http_request_duration_seconds", "clary_feedback_rating"} <= used


def test_every_range_function_uses_rate_interval(dashboards):
    """rate/irate/increase... run over $__rate_interval; the only other window
    allowed is ``increase(...[$__range])`` in an instant query (a total over
    the dashboard's time range)."""
    for uid, panel, target in all_targets(dashboards):
        expr = target["expr"]
        matches = RANGE_FN.findall(expr)
        assert len(matches) == expr.count("["), f"{uid}: unparsed range selector in {expr}"
        for fn, _selector, window in matches:
            where = f"{uid}: {panel['title']!r}: {fn}(...[{window}])"
            if window == RATE_INTERVAL:
                continue
            assert window == "$__range" and fn == "increase" and target["instant"], where


def test_counters_and_histograms_are_never_read_raw(dashboards):
    """A counter or bucket is meaningless without rate()/increase()."""
    index = exposed_name_index()
    for uid, panel, target in all_targets(dashboards):
        for match in SELECTOR.finditer(target["expr"]):
            family = BY_NAME[index[match.group(1)]]
            rest = target["expr"][match.end():]
            if family.kind in (Kind.COUNTER, Kind.HISTOGRAM):
                assert rest.startswith("["), f"{uid}: {panel['title']!r}: raw {match.group(0)}"


def test_quantiles_aggregate_by_le(dashboards):
    count = 0
    for uid, panel, target in all_targets(dashboards):
        for q in re.finditer(r"histogram_quantile\(", target["expr"]):
            count += 1
            assert re.match(r"histogram_quantile\(0\.\d+, sum by \(le[,)]", target["expr"][q.start():]), (
                f"{uid}: {panel['title']!r}: {target['expr']}"
            )
            assert "_bucket{" in target["expr"] or "_bucket[" in target["expr"]
    assert count > 30


def test_tier_dashboards_filter_on_their_tier(dashboards):
    index = exposed_name_index()
    for uid, panel, target in all_targets(dashboards):
        tier = tier_of(uid)
        for match in SELECTOR.finditer(target["expr"]):
            family = BY_NAME[index[match.group(1)]]
            if "tier" not in family.label_names:
                continue
            matchers = match.group(2) or ""
            if tier is None:
                assert "tier=" not in matchers, f"{uid}: overview filters a tier"
                assert re.search(r"by \([^)]*\btier\b", target["expr"]), (
                    f"{uid}: {panel['title']!r} does not split by tier: {target['expr']}"
                )
            else:
                assert f'tier="{tier}"' in matchers, f"{uid}: {panel['title']!r}: {match.group(0)}"
                for other in TIERS:
                    if other != tier:
                        assert f'"{other}"' not in target["expr"], uid


def test_label_conventions(dashboards):
    exprs = [t["expr"] for _, _, t in all_targets(dashboards)]
    joined = "\n".join(exprs)
    assert 'code=~"5.."' in joined
    assert 'result!="valid"' in joined
    assert '(clary_license_expiry_timestamp_seconds{tier="lite"}) - time()) / 86400' in joined
    assert 'sum by (window) (clary_active_users{tier="lite"})' in joined  # 5m / 1h / 24h
    assert 'clary_active_users{window="24h"}' in joined  # overview
    assert "clary_license_usage" in joined and "clary_license_limit" in joined
    assert not re.search(r"\[\d+[smhd]\]", joined), "hard-coded range window"


REQUIRED = {
    "usage": [
        "clary_documents_processed_total", "clary_document_processing_duration_seconds",
        "clary_feature_uses_total", "clary_features_per_document", "clary_http_requests_total",
        "clary_errors_total", "clary_active_users", "clary_session_duration_seconds",
        "clary_user_actions_total",
    ],
    "performance": [
        "clary_http_requests_total", "clary_http_request_duration_seconds", "clary_http_requests_in_flight",
        "clary_queue_length", "clary_inference_requests_total", "clary_inference_duration_seconds",
        "clary_model_load_duration_seconds", "clary_model_memory_bytes", "clary_system_cpu_usage_ratio",
        "clary_system_memory_used_bytes", "clary_system_disk_read_bytes_total",
        "clary_system_network_received_bytes_total", "clary_gpu_utilization_ratio",
        "clary_gpu_memory_used_bytes", "clary_gpu_temperature_celsius", "clary_gpu_power_watts",
        "clary_exporter_collector_up",
    ],
    "license": [
        "clary_license_validations_total", "clary_license_expiry_timestamp_seconds", "clary_license_usage",
        "clary_license_limit", "clary_quota_exceeded_total", "clary_licenses_active",
    ],
    "feedback": ["clary_feedback_submissions_total", "clary_feedback_rating", "clary_feedback_urgent_total"],
}
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


def test_each_kind_shows_what_the_issue_asks_for(dashboards):
    index = exposed_name_index()
    for tier in TIERS:
        for kind, families in REQUIRED.items():
            d = dashboards[f"clary-{tier}-{kind}"]
            used = {index[n] for _, t in targets_of(d) for n in METRIC.findall(t["expr"])}
            missing = set(families) - used
            assert not missing, f"clary-{tier}-{kind} lacks {sorted(missing)}"
    perf = json.dumps(dashboards["clary-lite-performance"])
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(clary_http_request_duration_seconds_bucket" in perf


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


# --- links --------------------------------------------------------------------------

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


# --- helpers fail at build time --------------------------------------------------------

def test_helpers_reject_unknown_names_labels_and_values():
    with pytest.raises(KeyError, match="clary_http_request_total"):
        m("clary_http_request_total")
    family = m("clary_license_validations_total")
    assert family.sel(tier="lite", result="valid") == 'clary_license_validations_total{tier="lite",result="valid"}'
    with pytest.raises(ValueError, match="no label"):
        family.sel(tenant="x")
    with pytest.raises(ValueError, match="unknown value"):
        family.sel(result="vaild")
    with pytest.raises(ValueError, match="unknown value"):
        m("clary_feature_uses_total").sel(feature=one_of(["ocr", "telepathy"]))
    assert m("clary_http_requests_total").sel(code=regex("5..")) == 'clary_http_requests_total{code=~"5.."}'
    with pytest.raises(ValueError, match="histogram"):
        m("clary_feedback_rating").sel(tier="lite")
    with pytest.raises(ValueError, match="no _bucket"):
        m("clary_http_requests_total").bucket()


# --- determinism, build and check ---------------------------------------------------

def test_build_is_byte_identical_across_runs(tmp_path, rendered):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli.main(["build", "--out", str(a)]) == 0
    assert cli.main(["build", "--out", str(b)]) == 0
    for rel in EXPECTED_FILES:
        first = (a / rel).read_bytes()
        assert first == (b / rel).read_bytes(), rel
        assert first == rendered[rel].encode()
        data = json.loads(first)
        assert first.decode() == json.dumps(data, sort_keys=True, indent=2) + "\n", f"{rel}: keys not sorted"
    # A second, separate interpreter produces the same bytes (no hash-seed dependence).
    c = tmp_path / "c"
    subprocess.run([sys.executable, "-m", "dashboards.cli", "build", "--out", str(c)], check=True,
                   cwd=ROOT, capture_output=True, env={"PYTHONHASHSEED": "12345", "PATH": ""})
    for rel in EXPECTED_FILES:
        assert (c / rel).read_bytes() == (a / rel).read_bytes(), rel


def _check(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dashboards.cli", "check", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_check_passes_on_the_committed_tree():
    result = _check(COMMITTED)
    assert result.returncode == 0, result.stderr
    assert "13 dashboards up to date" in result.stdout


def test_check_fails_naming_a_tampered_file(tmp_path):
    copy = tmp_path / "dashboards"
    shutil.copytree(COMMITTED, copy)
    assert _check(copy).returncode == 0
    victim = copy / "standard" / "clary-standard-license.json"
    data = json.loads(victim.read_text())
    data["panels"][1]["title"] = "Hand-edited"
    victim.write_text(json.dumps(data, sort_keys=True, indent=2) + "\n")
    result = _check(copy)
    assert result.returncode == 1
    assert str(victim) in result.stderr
    assert "Hand-edited" in result.stderr  # the diff excerpt
    assert "clary-lite" not in result.stderr  # only the tampered file is named


def test_check_fails_on_missing_and_stale_files(tmp_path):
    copy = tmp_path / "dashboards"
    shutil.copytree(COMMITTED, copy)
    (copy / "lite" / "clary-lite-feedback.json").unlink()
    (copy / "overview" / "old-dashboard.json").write_text("{}\n")
    result = _check(copy)
    assert result.returncode == 1
    assert "clary-lite-feedback.json: missing" in result.stderr
    assert "old-dashboard.json: not generated" in result.stderr
    # build repairs both
    assert cli.main(["build", "--out", str(copy)]) == 0
    assert not (copy / "overview" / "old-dashboard.json").exists()
    assert _check(copy).returncode == 0


def test_build_leaves_other_files_alone(tmp_path):
    (tmp_path / "clary.yaml").write_text("keep: me\n")
    (tmp_path / "lite").mkdir()
    (tmp_path / "lite" / "README.txt").write_text("keep\n")
    assert cli.main(["build", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "clary.yaml").read_text() == "keep: me\n"
    assert (tmp_path / "lite" / "README.txt").exists()


# --- provisioning -------------------------------------------------------------------

def test_datasource_provisioning_matches_dashboards(dashboards):
    files = sorted(DATASOURCES.glob("*.y*ml"))
    assert files
    sources = [ds for f in files for ds in yaml.safe_load(f.read_text())["datasources"]]
    (prom,) = [ds for ds in sources if ds["type"] == "prometheus"]
    assert prom["uid"] == DATASOURCE_UID
    assert prom["access"] == "proxy" and prom["url"].startswith("http")
    assert prom["jsonData"]["timeInterval"]
    for d in dashboards.values():
        assert d["templating"]["list"][0]["current"]["value"] == prom["uid"]


def test_dashboard_provider_uses_folders_from_files():
    config = yaml.safe_load((COMMITTED / "clary.yaml").read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["foldersFromFilesStructure"] is True
    # Grafana refuses folder/folderUid together with foldersFromFilesStructure.
    assert "folder" not in provider and "folderUid" not in provider
    assert provider["options"]["path"] == "/etc/grafana/provisioning/dashboards"
    for folder in ("lite", "standard", "professional", "overview"):
        assert (COMMITTED / folder).is_dir()


# --- the query list for end-to-end tests ----------------------------------------------

def test_all_queries_cover_every_target(dashboards):
    listed = queries.all_queries()
    expected = [(uid, p["title"], t["expr"]) for uid, p, t in all_targets(dashboards)]
    assert len(listed) == len(expected) > 300
    assert {uid for uid, _, _ in listed} == set(dashboards)
    for uid, title, expr in listed:
        assert "$" not in expr, (uid, title, expr)
        assert "[1m]" in expr or "[1h]" in expr or "[" not in expr


def test_substitute():
    expr = 'rate(x[$__rate_interval]) + increase(x[${__range}]) + $__range_s + $__interval_ms + "${datasource}"'
    assert queries.substitute(expr, "2m") == 'rate(x[2m]) + increase(x[1h]) + 3600 + 15000 + "clary-prometheus"'
    assert queries.substitute("rate(x[$__interval])", interval="30s") == "rate(x[30s])"
    with pytest.raises(ValueError, match=r"\$tenant"):
        queries.substitute("x{t=\"$tenant\"}")


def test_docs_list_every_dashboard(dashboards):
    readme = (ROOT / "docs" / "dashboards.md").read_text()
    for rel in EXPECTED_FILES:
        uid = Path(rel).stem
        assert f"| `{uid}` | `{rel}` |" in readme, f"docs/dashboards.md does not list {uid}"
    assert "clary-dashboards build" in readme and "clary-dashboards check" in readme


def test_check_fails_after_a_code_change_that_alters_a_panel(monkeypatch, capsys):
    """The CI guard works in the direction that matters: code moved, JSON did not."""
    from dashboards import cli, feedback

    assert cli.main(["check", "--out", str(COMMITTED)]) == 0
    original = feedback.submissions_row

    def altered(tier):
        row = original(tier)
        row.panels[0].title = "Submissions (renamed in code)"
        return row

    monkeypatch.setattr(feedback, "submissions_row", altered)
    capsys.readouterr()
    assert cli.main(["check", "--out", str(COMMITTED)]) == 1
    err = capsys.readouterr().err
    for tier in ("lite", "standard", "professional"):
        assert f"clary-{tier}-feedback.json" in err
    assert "clary-lite-usage.json" not in err
