"""The dashboards' queries: catalog names only, rate windows, no raw counters, tier filters, what each kind shows;
the catalog-checked builder fails at build time; the query list for the end-to-end tests."""

from __future__ import annotations

import json
import re

import pytest

from dashboards import queries
from exporter.catalog import BY_NAME, Kind, exposed_name_index
from exporter.promql import m, one_of, regex
from tests.dashboards.helpers import (
    METRIC,
    RANGE_FN,
    RATE_INTERVAL,
    RECORDED,
    SELECTOR,
    TIERS,
    all_targets,
    names_read,
    recorded_sources,
    targets_of,
    tier_of,
    unscoped,
)


def test_every_expr_uses_only_catalog_metrics(dashboards):
    index = exposed_name_index()
    used = set()
    for uid, panel, target in all_targets(dashboards):
        names = METRIC.findall(target["expr"])
        assert names or RECORDED.search(target["expr"]), (
            f"{uid}: {panel['title']!r} queries no Clary metric: {target['expr']}")
        for name in names:
            assert name in index, f"{uid}: {panel['title']!r} uses {name}, not in the catalog"
            used.add(index[name])
    # Sanity: the parser sees through histogram series (_bucket, _sum, _count).
    assert {"clary_http_request_duration_seconds", "clary_feedback_rating"} <= used


def test_every_range_function_uses_rate_interval(dashboards):
    """rate/irate/increase... run over $__rate_interval; the only other window
    allowed is ``$__range`` in an instant query: ``increase`` (a total over
    the dashboard's time range) or ``<op>_over_time`` of a gauge (the highest
    over the range)."""
    index = exposed_name_index()
    for uid, panel, target in all_targets(dashboards):
        expr = target["expr"]
        matches = RANGE_FN.findall(expr)
        assert len(matches) == expr.count("["), f"{uid}: unparsed range selector in {expr}"
        for fn, _selector, window in matches:
            where = f"{uid}: {panel['title']!r}: {fn}(...[{window}])"
            if window == RATE_INTERVAL:
                continue
            over_time = fn.endswith("_over_time") and BY_NAME[index[_selector.split("{")[0]]].kind is Kind.GAUGE
            assert window == "$__range" and (fn == "increase" or over_time) and target["instant"], where


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
        for match in RECORDED.finditer(target["expr"]):  # recorded series keep the tier in their level
            if "tier" in match.group(1).split(":")[0].split("_"):
                matchers = match.group(2) or ""
                if tier is None:
                    assert "tier=" not in matchers and re.search(r"by \([^)]*\btier\b", target["expr"]), uid
                else:
                    assert f'tier="{tier}"' in matchers, f"{uid}: {panel['title']!r}: {match.group(0)}"


def test_label_conventions(dashboards):
    exprs = [unscoped(t["expr"]) for _, _, t in all_targets(dashboards)]
    joined = "\n".join(exprs)
    assert 'code=~"5.."' in joined
    assert 'result!="valid"' in joined
    # Days to expiry from the recording rule (expiry 0 dropped), never below 0.
    assert ('clamp_min((max by (license) (license_tier:clary_license_expiry_timestamp_seconds:max{tier="lite"})'
            ' - time()) / 86400, 0)') in joined
    # Per-replica distinct counts and shared state: max over replicas, never a sum.
    assert 'max by (window) (clary_active_users{tier="lite"})' in joined  # 5m / 1h / 24h
    assert "sum by (window) (clary_active_users" not in joined and "sum by (tier) (clary_active_users" not in joined
    assert "max by (queue) (clary_queue_length)" in joined and "sum by (queue) (clary_queue_length" not in joined
    assert "sum by (tier) (clary_licenses_active" not in joined and "sum(clary_licenses_active" not in joined
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
        "clary_model_last_load_duration_seconds", "clary_model_memory_bytes",
        "clary_system_cpu_usage_ratio",
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


def test_each_kind_shows_what_the_issue_asks_for(dashboards):
    index = exposed_name_index()
    for tier in TIERS:
        for kind, families in REQUIRED.items():
            d = dashboards[f"clary-{tier}-{kind}"]
            used = {index[n] for _, t in targets_of(d) for n in names_read(t["expr"])}
            missing = set(families) - used
            assert not missing, f"clary-{tier}-{kind} lacks {sorted(missing)}"
    perf = json.dumps(dashboards["clary-lite-performance"])
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(clary_http_request_duration_seconds_bucket" in perf


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


def test_recorded_series_read_by_panels_are_recorded_by_the_rules(dashboards):
    """Panels read the recording rules, so the rules' guards apply (expiry 0 dropped, limit 0 no ratio); a
    recorded name that the rules do not produce would leave the panel empty."""
    recorded = recorded_sources()
    read = {}
    for uid, panel, target in all_targets(dashboards):
        for name, matchers in RECORDED.findall(target["expr"]):
            assert name in recorded, f"{uid}: {panel['title']!r} reads {name}, which no rule records"
            level = name.split(":")[0].split("_")
            for label in re.findall(r"(\w+)(?:=~|!~|!=|=)", matchers):
                assert label in level or label in ("cluster", "job"), f"{uid}: {name} has no label {label}"
            read.setdefault(name, set()).add(uid)
    # The license panels: every tier's license dashboard and the Overview.
    for name in ("license_tier:clary_license_expiry_timestamp_seconds:max",
                 "license_tier_limit:clary_license_usage_per_limit:ratio"):
        assert {f"clary-{tier}-license" for tier in TIERS} | {"clary-overview"} <= read[name]
    # No license panel reads the raw expiry gauge (it would show expires_at 0 as -20,000 days).
    for uid, panel, target in all_targets(dashboards):
        assert "clary_license_expiry_timestamp_seconds{" not in target["expr"], (uid, panel["title"])
