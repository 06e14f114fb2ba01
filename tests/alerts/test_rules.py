"""The generated Prometheus rules: promtool, the metric catalog, conventions, runbooks.

promtool comes from Debian's prometheus package (``make system-deps``); a
missing binary fails these tests, it never skips them.
"""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from alerts import checks
from alerts.config import (
    BURN_RATE_WINDOWS,
    SEVERITIES,
    SLO_NAMES,
    SLO_SERIES,
    SLO_WINDOWS,
    TEAMS,
    TIERS,
    Config,
    seconds,
)
from alerts.groups import RULE_FILES

RUNBOOKS = checks.ALERTS_DIR / "runbooks.md"

# Alerts whose description has no $value, and why.
NO_VALUE_IN_DESCRIPTION = {
    "ClaryExporterDown": "the value is always 0 (up == 0, or their sum); the description names the target or job",
    "ClaryServiceDown": "the same as ClaryExporterDown, for the library-mode services' job",
    "ClaryExporterAbsent": "absent() has no value; the description names the job",
    "ClaryGpuMemoryRepairPending": "a 0/1 flag (repair pending); the description names the GPU",
    "ClaryGpuRowRemapFailed": "a 0/1 flag (remap failed); the description names the GPU",
    "ClaryExporterStorageFailing": "a 0/1 flag (storage_up == 0); the description names the instance",
    "Watchdog": "the value is always 1",
}
# Alerts that are per tier: every firing case must carry the tier label.
TIER_ALERTS = {
    "ClaryErrorBudgetBurn",
    "ClaryHttpErrorSpike",
    "ClaryHttpLatencyHigh",
    "ClaryDocumentFailureRatioHigh",
    "ClaryUnhandledExceptions",
    "ClaryLicenseValidationFailureRatioHigh",
    "ClaryLicenseValidationErrors",
    "ClaryLicenseValidationsStopped",
    "ClaryLicenseExpiring",
    "ClaryLicenseExpired",
    "ClaryLicenseUsageOverLimit",
    "ClaryLicenseUsageNearLimit",
    "ClaryUrgentBugReport",
    "ClaryFeedbackRatingDrop",
}


def _rules():
    return list(checks.iter_rules())


def _alerts():
    return [rule for _, rule in _rules() if "alert" in rule]


def _recorded() -> set[str]:
    return {rule["record"] for _, rule in _rules() if "record" in rule}


def _variant(labels: dict) -> tuple[str, str, str, str]:
    """What tells two rules of one alert apart: severity and (burn rates) the SLO and the long window."""
    return (labels["alertname"], labels.get("severity", ""), labels.get("slo", ""), labels.get("long_window", ""))


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=180, **kw)


# --------------------------------------------------------------------------
# promtool


def test_promtool_check_rules_accepts_every_generated_file():
    promtool = checks.binary("promtool")
    files = checks.rule_files()
    assert [p.name for p in files] == sorted(RULE_FILES)
    proc = _run([promtool, "check", "rules", *files])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # promtool's lint (duplicate rules and the like) reports under the same run
    assert "lint" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr
    found = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", proc.stdout))
    assert found == len(_rules()) > 60


@pytest.mark.parametrize("test_file", checks.promtool_test_files(), ids=lambda p: p.name)
def test_promtool_unit_tests_pass(test_file: Path):
    promtool = checks.binary("promtool")
    proc = _run([promtool, "test", "rules", test_file.name], cwd=test_file.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_unit_test_harness_fails_on_a_wrong_expectation(tmp_path):
    """The promtool tests can fail: a Watchdog expected silent is reported."""
    promtool = checks.binary("promtool")
    test_file = tmp_path / "wrong.test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(p) for p in checks.rule_files()],
                "evaluation_interval": "1m",
                "tests": [{"interval": "1m", "input_series": [], "alert_rule_test": [
                    {"eval_time": "1m", "alertname": "Watchdog", "exp_alerts": []}
                ]}],
            }
        )
    )
    proc = _run([promtool, "test", "rules", test_file])
    assert proc.returncode != 0
    assert "FAILED" in proc.stdout + proc.stderr


def test_promtool_tests_load_every_rule_file():
    for path in checks.promtool_test_files():
        doc = yaml.safe_load(path.read_text())
        loaded = sorted(Path(f).name for f in doc["rule_files"])
        assert loaded == sorted(RULE_FILES), path.name


def _promtool_cases():
    """(file, group index, case) for every alert_rule_test case."""
    for path in checks.promtool_test_files():
        doc = yaml.safe_load(path.read_text())
        for index, group in enumerate(doc["tests"]):
            for case in group.get("alert_rule_test", []):
                yield path.name, index, case


def _duration(text: str) -> int:
    return sum(seconds(part) for part in re.findall(r"\d+[smhdw]", text))


def test_every_alert_goes_from_silent_to_firing_in_a_promtool_test():
    """One firing and one not-firing case per alert rule, in that order in one test.

    For a rule with ``for:`` the silent case is its pending side: the cases'
    comments give the arithmetic. The Watchdog cannot be silent by design.
    """
    silent: dict[tuple, list[tuple]] = defaultdict(list)
    firing: dict[tuple, list[tuple]] = defaultdict(list)
    variants_by_name: dict[str, set] = defaultdict(set)
    for rule in _alerts():
        variants_by_name[rule["alert"]].add(_variant({"alertname": rule["alert"], **rule["labels"]}))
    for file, group, case in _promtool_cases():
        when = _duration(case["eval_time"])
        fired = {_variant({"alertname": case["alertname"], **a["exp_labels"]}) for a in case.get("exp_alerts") or []}
        for variant in variants_by_name[case["alertname"]]:
            (firing if variant in fired else silent)[variant].append((file, group, when))
    missing = []
    for name, variants in variants_by_name.items():
        for variant in variants:
            if not firing[variant]:
                missing.append(f"{variant}: never fires in a promtool test")
            elif name != "Watchdog" and not any(
                s[:2] == f[:2] and s[2] < f[2] for s in silent[variant] for f in firing[variant]
            ):
                missing.append(f"{variant}: no not-firing case before a firing one in the same test")
    assert not missing, "\n".join(missing)


def test_firing_cases_of_per_tier_alerts_carry_the_tier():
    seen = set()
    for file, _, case in _promtool_cases():
        if case["alertname"] in TIER_ALERTS:
            for alert in case.get("exp_alerts") or []:
                assert alert["exp_labels"].get("tier") in TIERS, (file, case["alertname"], alert)
                seen.add(case["alertname"])
    assert seen == TIER_ALERTS


# --------------------------------------------------------------------------
# The catalog


def test_every_metric_a_rule_reads_is_in_the_catalog():
    recorded = _recorded()
    problems = {}
    for _, rule in _rules():
        found = checks.catalog_problems(rule["expr"], recorded)
        if found:
            problems[rule.get("alert") or rule["record"]] = found
    assert not problems, problems


def test_every_catalog_check_catches_what_it_should():
    recorded = _recorded()
    cases = {
        'rate(clary_http_request_total[5m])': "not in the metric catalog",
        'rate(clary_inference_requests_total{outcome="failed"}[5m])': "'failed' is not one of",
        'rate(clary_license_validations_total{tier=~"lite|gold"}[5m])': "'gold' is not one of",
        'rate(clary_feedback_urgent_total{model="x"}[5m])': "has no label 'model'",
        'sum by (teir) (rate(clary_http_requests_total[5m]))': "grouping label 'teir'",
        "tier:clary_http_nothing:rate5m": "not a recording rule",
        'tier:clary_http_requests:rate5m{model="x"}': "has no label 'model'",
        'up{collector="gpu"}': "has no label 'collector'",
    }
    for expr, message in cases.items():
        problems = checks.catalog_problems(expr, recorded)
        assert any(message in p for p in problems), (expr, problems)
    assert checks.catalog_problems('sum by (tier) (rate(clary_http_requests_total{code=~"5.."}[5m]))', recorded) == []


def test_the_promql_reader_finds_selectors_groupings_and_ranges():
    info = checks.read_expr(
        'histogram_quantile(0.95, sum by (tier, le) (rate(clary_http_request_duration_seconds_bucket{tier!="unknown"}[5m])))'
        ' > on (tier) group_left () 1e-3 and absent(up{job="clary-exporter"}) # trailing comment'
    )
    assert [s.name for s in info.selectors] == ["clary_http_request_duration_seconds_bucket", "up"]
    assert info.selectors[0].matchers == (checks.Matcher("tier", "!=", "unknown"),)
    assert info.selectors[1].matchers == (checks.Matcher("job", "=", "clary-exporter"),)
    assert info.grouping_labels == {"tier", "le"}
    assert info.ranges == ("5m",)


# --------------------------------------------------------------------------
# Conventions


RECORD_NAME = re.compile(r"^[a-z]+(?:_[a-z]+)*:clary_[a-z0-9_]+:[a-z0-9_]+$")


def test_recording_rule_names_follow_level_metric_operations():
    names = [rule["record"] for _, rule in _rules() if "record" in rule]
    assert len(names) == len(set(names)), "duplicate recording rule names"
    for _, rule in _rules():
        if "record" not in rule:
            continue
        name = rule["record"]
        assert RECORD_NAME.match(name), name
        # an aggregation at the top keeps exactly the labels the level names
        top = re.match(r"(?:sum|max|min|avg) by \(([^)]*)\)", rule["expr"])
        if top:
            kept = {label.strip() for label in top.group(1).split(",")}
            assert kept == checks.recording_labels(name), (name, kept)


def test_the_issue_s_recording_rules_exist():
    recorded = _recorded()
    expected = {"tier:clary_http_requests:rate5m"}
    for w in ("5m", "30m"):
        expected |= {
            f"tier:clary_http_requests:rate{w}",
            f"tier:clary_http_errors:rate{w}",
            f"tier:clary_http_errors_per_request:ratio_rate{w}",
        }
    # every SLO at every burn-rate window, over its period, its target, budget left and burn rate
    for slo in SLO_NAMES:
        names = SLO_SERIES[slo]
        for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
            expected |= {names.events(w), names.errors(w), names.error_ratio(w)}
        expected |= {names.error_ratio("30d"), names.objective, names.budget_remaining, names.burn_rate}
    expected |= {f"tier:clary_http_request_duration_seconds:p{q}_rate5m" for q in (50, 90, 95, 99)}
    expected |= {
        "tier:clary_license_validation_failures_per_validation:ratio_rate5m",
        "tier:clary_license_validation_failures_per_validation:ratio_rate30m",
        "model:clary_inference_failures_per_request:ratio_rate5m",
        "tier:clary_inference_failures_per_request:ratio_rate5m",
        "tier_model:clary_inference_failures_per_request:ratio_rate5m",
    }
    assert expected <= recorded, sorted(expected - recorded)


def test_alert_names_labels_and_annotations():
    names = set()
    for rule in _alerts():
        name = rule["alert"]
        names.add(name)
        assert name == "Watchdog" or re.fullmatch(r"Clary[A-Z][A-Za-z0-9]+", name), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["labels"]["team"] in TEAMS, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        if name not in NO_VALUE_IN_DESCRIPTION:
            assert "$value" in annotations["description"], f"{name}: the description should quote the value"
    expected = {
        "ClaryLicenseValidationFailureRatioHigh", "ClaryLicenseValidationErrors",
        "ClaryLicenseValidationsStopped", "ClaryLicenseExpiring", "ClaryLicenseExpired",
        "ClaryLicenseUsageOverLimit", "ClaryErrorBudgetBurn", "ClaryHttpErrorSpike",
        "ClaryHttpLatencyHigh", "ClaryInferenceFailureRatioHigh", "ClaryModelUnavailable",
        "ClaryGpuTemperatureHigh", "ClaryGpuMemorySaturated", "ClaryExporterCollectorFailing",
        "ClaryGpuEccUncorrectedErrors", "ClaryGpuMemoryRepairPending", "ClaryGpuRowRemapFailed",
        "ClaryGpuThermalThrottling", "ClaryGpuPowerThrottling", "ClaryGpuDevicesMissing",
        "ClaryExporterDown", "ClaryExporterAbsent", "ClaryUrgentBugReport", "Watchdog",
        # the issue's missing alerts
        "ClaryLlmFailureRatioHigh", "ClaryLlmLatencyHigh", "ClaryDocumentFailureRatioHigh",
        "ClaryUnhandledExceptions", "ClaryQueueBacklog", "ClaryExporterLabelOverflow", "ClaryEventsRejected",
        "ClaryServiceDown", "ClaryFeedbackRatingDrop",
    }
    assert expected <= names, sorted(expected - names)
    assert set(NO_VALUE_IN_DESCRIPTION) <= names


def test_multi_severity_alerts_page_at_the_tighter_threshold():
    by_name = defaultdict(dict)
    for rule in _alerts():
        by_name[rule["alert"]].setdefault(rule["labels"]["severity"], []).append(rule)
    down = {sev: rules[0]["expr"] for sev, rules in by_name["ClaryExporterDown"].items()}
    assert down == {
        "warning": 'up{job="clary-exporter"} == 0',
        "critical": 'sum by (cluster, job) (up{job="clary-exporter"}) == 0',
    }
    assert {sev: rules[0]["for"] for sev, rules in by_name["ClaryExporterDown"].items()} == {"warning": "15m", "critical": "5m"}
    temperature = {sev: rules[0]["expr"] for sev, rules in by_name["ClaryGpuTemperatureHigh"].items()}
    assert temperature == {
        "warning": 'clary_gpu_temperature_celsius{job="clary-exporter"} > 85',
        "critical": 'clary_gpu_temperature_celsius{job="clary-exporter"} > 90',
    }


def test_burn_rate_alerts_follow_the_window_table():
    burns = [rule for rule in _alerts() if rule["alert"] == "ClaryErrorBudgetBurn"]
    got = {(r["labels"]["slo"], r["labels"]["severity"], r["labels"]["long_window"], r["labels"]["short_window"], r["for"])
           for r in burns}
    assert got == {(slo, b.severity, b.long, b.short, b.for_) for slo in SLO_NAMES for b in BURN_RATE_WINDOWS}
    assert len(burns) == len(got) == 12
    factors = {"1h": "14.4", "6h": "6", "1d": "3", "3d": "1"}
    for rule in burns:
        names = SLO_SERIES[rule["labels"]["slo"]]
        long, short = rule["labels"]["long_window"], rule["labels"]["short_window"]
        # each window's error ratio over the tier's budget (1 - target), against the pair's factor
        for window in (long, short):
            assert (f"{names.error_ratio(window)}\n/ on (tier) group_left ()\n(1 - {names.objective})\n) > {factors[long]}"
                    in rule["expr"]), rule["expr"]
        assert f"{names.events(short)} * {seconds(short)} >= 10" in rule["expr"]
    assert SLO_WINDOWS == ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


def test_slo_targets_and_the_latency_threshold_come_from_the_config():
    slo = yaml.safe_load((checks.RULES_DIR / "clary-slo.yml").read_text())["groups"][0]["rules"]
    exprs = {rule.get("record"): rule["expr"] for rule in slo}
    cfg = Config()
    for name in SLO_NAMES:
        for tier in TIERS:
            target = cfg.slo_targets(name)[tier]
            assert f'label_replace(vector({target:g}), "tier", "{tier}", "", "")' in exprs[SLO_SERIES[name].objective]
    latency = exprs[SLO_SERIES["latency"].errors("5m")]
    # lite 2.5 s and professional 1 s are buckets; standard 1.5 s is read between 1 and 2.5, weighted 2/3 and 1/3
    assert 'tier="lite",le="2.5"}' in latency
    assert 'tier="professional",le=~"1|1\\\\.0"}' in latency
    assert '0.666666666667 * sum by (cluster, tier) (rate(clary_http_request_duration_seconds_bucket{job="clary-exporter",tier="standard",le=~"1|1\\\\.0"}[5m]))' in latency
    assert cfg.latency_buckets("standard") == ((1, 0.666666666667), (2.5, 0.333333333333))


def test_alerts_read_recording_rules_of_their_own_group_recorded_before_them():
    """Groups run concurrently; inside one, rules run in order. So an alert
    reading another group's recording rule would see last round's value."""
    for group in checks.load_groups():
        seen: set[str] = set()
        for rule in group["rules"]:
            for sel in checks.read_expr(rule["expr"]).selectors:
                if ":" in sel.name:
                    assert sel.name in seen, f"{group['name']}: {rule.get('alert') or rule['record']} reads {sel.name}"
            if "record" in rule:
                seen.add(rule["record"])


def test_range_selectors_span_several_scrapes_for_prometheus_3():
    """Prometheus 3 range selectors are left-open: a window must hold at
    least two scrapes at the usual 15s-1m intervals, or rate() goes empty."""
    for _, rule in _rules():
        for window in checks.read_expr(rule["expr"]).ranges:
            assert seconds(window) >= 300, (rule.get("alert") or rule["record"], window)


def test_regex_matchers_cannot_be_changed_by_prometheus_3_dot_semantics():
    """In Prometheus 3 a regex '.' also matches a newline; keep regexes to
    literal alternations, the status-code class (digits only) and bucket
    bounds in both notations with an escaped dot (``le=~"1|1\\.0"``)."""
    for _, rule in _rules():
        for sel in checks.read_expr(rule["expr"]).selectors:
            for m in sel.matchers:
                if m.op in ("=~", "!~"):
                    assert (re.fullmatch(r"[a-z0-9_|-]+", m.value)
                            or (m.label == "code" and m.value == "5..")
                            or (m.label == "le" and re.fullmatch(r"[0-9]+(\\\.[0-9]+)?(\|[0-9]+(\\\.[0-9]+)?)+", m.value))), m


# --------------------------------------------------------------------------
# Runbooks


def _github_slug(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def _runbook_sections() -> dict[str, str]:
    text = RUNBOOKS.read_text()
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return {_github_slug(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


def test_every_runbook_url_points_to_an_existing_section():
    sections = _runbook_sections()
    base = Config().runbook_base_url
    assert base.endswith("alerts/runbooks.md")
    for rule in _alerts():
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == base, url
        assert anchor == rule["alert"].lower(), url
        assert anchor in sections, f"alerts/runbooks.md has no section for {rule['alert']}"


def test_every_runbook_section_explains_meaning_impact_diagnosis_mitigation():
    sections = _runbook_sections()
    alert_names = {rule["alert"].lower() for rule in _alerts()}
    assert set(sections) == alert_names, "runbook sections and alerts differ"
    for anchor, body in sections.items():
        for part in ("**Meaning.**", "**Impact.**", "**Diagnosis.**", "**Mitigation.**"):
            assert part in body, f"{anchor}: missing {part}"
        if anchor != "watchdog":
            assert "```promql" in body, f"{anchor}: no PromQL to run"
