"""One config for rules and dashboards: the selector on every panel query, the variables, panel
thresholds equal to the alerts', the SLO rows reading the SLO rules, and a site file moving both."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from alerts import checks
from alerts.config import SLO_NAMES, SLO_SERIES
from dashboards import build, queries
from exporter.catalog import TIERS, exposed_name_index
from mixin.config import Config
from tests.dashboards.helpers import all_targets, data_panels, panels_of
from tests.support import ROOT


def _selectors(expr: str):
    """Every selector of ``expr`` with its matchers, variables set as "All" leaves them."""
    return checks.read_expr(queries.substitute(expr)).selectors


def test_every_panel_query_carries_the_selector(dashboards):
    """Raw series: cluster, job and instance variables; recorded series (no job left): the cluster."""
    exposed = exposed_name_index()
    seen = {"raw": 0, "recorded": 0}
    for uid, panel, target in all_targets(dashboards):
        expr = target["expr"]
        for sel in _selectors(expr):
            where = f"{uid}: {panel['title']!r}: {expr}"
            matchers = {(m.label, m.op, m.value) for m in sel.matchers}
            if ":" in sel.name:
                assert ("cluster", "=~", ".*") in matchers, where
                seen["recorded"] += 1
            else:
                assert sel.name in exposed, where
                assert {("cluster", "=~", ".*"), ("job", "=~", "clary-exporter"), ("instance", "=~", ".*")} <= matchers, where
                seen["raw"] += 1
        if any(":" not in sel.name for sel in _selectors(expr)):
            assert 'job=~"$job"' in expr and 'instance=~"$instance"' in expr and 'cluster=~"$cluster"' in expr, expr
    assert seen["raw"] > 300 and seen["recorded"] > 50


def test_cluster_job_and_instance_variables_follow_the_datasource(dashboards):
    for uid, d in dashboards.items():
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert list(variables) == ["datasource", "cluster", "job", "instance"], uid
        cluster, job, instance = variables["cluster"], variables["job"], variables["instance"]
        assert cluster["query"]["query"] == 'label_values(up{job="clary-exporter"}, cluster)'
        assert job["query"]["query"] == 'label_values(up{job="clary-exporter",cluster=~"$cluster"}, job)'
        assert instance["query"]["query"] == 'label_values(up{job=~"$job",cluster=~"$cluster"}, instance)'
        for var in (cluster, job, instance):
            assert var["type"] == "query" and var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert var["includeAll"] and var["multi"] and var["current"]["value"] == ["$__all"]
        # "All" of cluster and instance also matches series without the label (a single-cluster Prometheus)
        assert cluster["allValue"] == instance["allValue"] == ".*" and job["allValue"] is None


def _steps(panel: dict) -> list[tuple[str, float | None]]:
    return [(s["color"], s["value"]) for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def _panel(dashboard: dict, title: str, kind: str | None = None) -> dict:
    (panel,) = [p for p in data_panels(dashboard) if p["title"] == title and kind in (None, p["type"])]
    return panel


def _rule_exprs(alert: str) -> dict[tuple, str]:
    return {tuple(sorted(r["labels"].items())): r["expr"] for _, r in checks.iter_rules() if r.get("alert") == alert}


def test_panel_thresholds_are_the_alert_thresholds(dashboards):
    """p95 per tier 2.5 / 1.5 / 1 s and GPU temperature 85 / 90 °C: where the alerts fire, as written in the rules."""
    latency_rules = _rule_exprs("ClaryHttpLatencyHigh")
    for tier, seconds in zip(TIERS, (2.5, 1.5, 1)):
        perf = dashboards[f"clary-{tier}-performance"]
        (expr,) = [e for labels, e in latency_rules.items() if ("tier", tier) in labels]
        assert f"p95_rate5m{{tier=\"{tier}\"}} > {seconds:g}\n" in expr
        for title in ("Latency p95", "Latency p50 / p95 / p99", "Slowest routes (p95)"):
            assert _steps(_panel(perf, title)) == [("green", None), ("red", seconds)], (tier, title)
        # 5xx ratio: orange above the tier's budget, red at the 14.4x page
        budget = Config().error_budget("availability", tier)
        assert _steps(_panel(perf, "Error ratio (5xx)", "stat"))[1:] == [("orange", budget), ("red", 14.4 * budget)]
    temperature = sorted(_rule_exprs("ClaryGpuTemperatureHigh").values())
    assert temperature == ['clary_gpu_temperature_celsius{job="clary-exporter"} > 85',
                           'clary_gpu_temperature_celsius{job="clary-exporter"} > 90']
    gpu = _panel(dashboards["clary-lite-performance"], "GPU temperature")
    assert _steps(gpu) == [("green", None), ("orange", 85), ("red", 90)]
    overview = dashboards["clary-overview"]
    assert _steps(_panel(overview, "Highest compliance")) == [("green", None), ("orange", 0.9), ("red", 1)]
    assert _steps(_panel(overview, "Soonest license expiry"))[2] == ("green", 14)


def test_slo_rows_read_the_slo_recording_rules(dashboards):
    recorded = {r["record"] for _, r in checks.iter_rules() if "record" in r}
    for tier in TIERS:
        perf = dashboards[f"clary-{tier}-performance"]
        first_row = next(p for p in panels_of(perf) if p["type"] == "row")
        assert first_row["title"] == "Service level objectives"
        for slo in SLO_NAMES:
            names = SLO_SERIES[slo]
            title = {"availability": "Availability", "latency": "Latency", "documents": "Document success"}[slo]
            sli = _panel(perf, f"{title} SLI (1h)")
            assert sli["targets"][0]["expr"] == (
                f'min(1 - {names.error_ratio("1h")}{{cluster=~"$cluster",tier="{tier}"}})')
            assert _steps(sli) == [("red", None), ("green", Config().slo_targets(slo)[tier])]
            for suffix, name in (("target", names.objective), ("budget left (30d)", names.budget_remaining),
                                 ("burn rate (1h)", names.burn_rate)):
                expr = _panel(perf, f"{title} {suffix}")["targets"][0]["expr"]
                assert name in expr and name in recorded, (tier, slo, expr)
    tables = [p for p in data_panels(dashboards["clary-overview"]) if p["title"].endswith("error budget by tier")]
    assert [p["title"] for p in tables] == [f"{name} SLO and error budget by tier"
                                            for name in ("Availability", "Latency", "Document success")]
    for table, slo in zip(tables, SLO_NAMES):
        exprs = [t["expr"] for t in table["targets"]]
        assert exprs[0] == f'max by (tier) ({SLO_SERIES[slo].objective}{{cluster=~"$cluster"}})'
        assert all(e.split("(", 2)[-1].split("{")[0].replace("1 - ", "") in recorded for e in exprs), exprs


SITE = """\
selector: job="clary", namespace="ai"
cluster_label: region
latency_p95_seconds: {professional: 0.75}
availability_slo: {professional: 0.9995}
gpu_temperature_warning_celsius: 80
"""


def _run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Rules and dashboards generated from one site file, by the two CLIs."""
    tmp = tmp_path_factory.mktemp("site")
    (tmp / "site.yml").write_text(SITE)
    rules = _run(sys.executable, "-m", "alerts.generate", "--config", tmp / "site.yml", "--output-dir", tmp / "alerts")
    assert rules.returncode == 0, rules.stderr
    dash = _run(sys.executable, "-m", "dashboards.cli", "build", "--config", tmp / "site.yml", "--out", tmp / "dashboards")
    assert dash.returncode == 0, dash.stderr
    return tmp


def test_a_site_file_changes_the_rules_and_the_dashboards_alike(site):
    slo_rules = (site / "alerts" / "rules" / "clary-slo.yml").read_text()
    http_rules = (site / "alerts" / "rules" / "clary-http.yml").read_text()
    gpu_rules = (site / "alerts" / "rules" / "clary-infrastructure.yml").read_text()
    # the selector and the cluster label
    assert 'sum by (region, tier) (rate(clary_http_requests_total{job="clary",namespace="ai"}[5m]))' in slo_rules
    assert 'job="clary-exporter"' not in slo_rules + http_rules + gpu_rules
    # the threshold: the p95 alert and the latency SLO's bucket (0.75 s is one)
    assert 'p95_rate5m{tier="professional"} > 0.75' in http_rules
    assert 'tier="professional",le="0.75"}' in slo_rules
    assert 'clary_gpu_temperature_celsius{job="clary",namespace="ai"} > 80' in gpu_rules
    # the SLO target
    assert 'label_replace(vector(0.9995), "tier", "professional", "", "")' in slo_rules

    pro = json.loads((site / "dashboards" / "professional" / "clary-professional-performance.json").read_text())
    std = json.loads((site / "dashboards" / "standard" / "clary-standard-performance.json").read_text())
    variables = {v["name"]: v for v in pro["templating"]["list"]}
    assert variables["cluster"]["query"]["query"] == 'label_values(up{job="clary",namespace="ai"}, region)'
    exprs = [t["expr"] for _, t in ((p, t) for p in data_panels(pro) for t in p.get("targets") or [])]
    raw = [e for e in exprs if "clary_http_requests_total" in e]
    assert raw and all('region=~"$cluster",job=~"$job",instance=~"$instance",namespace="ai"' in e for e in raw)
    assert _steps(_panel(pro, "Latency p95")) == [("green", None), ("red", 0.75)]
    assert _steps(_panel(std, "Latency p95")) == [("green", None), ("red", 1.5)]  # other tiers keep theirs
    assert _steps(_panel(pro, "Availability SLI (1h)")) == [("red", None), ("green", 0.9995)]
    assert _steps(_panel(pro, "Error ratio (5xx)", "stat"))[1:] == [("orange", 0.0005), ("red", 14.4 * 0.0005)]
    assert _steps(_panel(pro, "GPU temperature")) == [("green", None), ("orange", 80), ("red", 90)]


def test_check_compares_with_the_site_config(site):
    out = site / "dashboards"
    assert _run(sys.executable, "-m", "dashboards.cli", "check", "--config", site / "site.yml", "--out", out).returncode == 0
    default = _run(sys.executable, "-m", "dashboards.cli", "check", "--out", out)
    assert default.returncode == 1 and "clary-professional-performance.json" in default.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("selector: clary\n", "selector 'clary': cannot read a matcher"),
        ("latency_p95_seconds: {lite: 60}\n", "latency_p95_seconds[lite] must lie within"),
        ("colour: red\n", "unknown config keys ['colour']"),
        ("- a list\n", "must be a YAML mapping"),
    ],
)
def test_a_bad_site_file_is_one_line_and_exit_2(tmp_path, text, message):
    (tmp_path / "site.yml").write_text(text)
    proc = _run(sys.executable, "-m", "dashboards.cli", "build", "--config", tmp_path / "site.yml", "--out", tmp_path / "out")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_default_config_builds_the_committed_dashboards():
    assert build.generate(Config()) == build.generate() == build.generate(Config.from_mapping(yaml.safe_load("{}")))
