"""Lite-only rows: basic document metrics (usage) and API calls against limits (license)."""

from __future__ import annotations

from exporter.promql import (
    agg,
    compliance,
    hist_mean_range,
    m,
    not_equal,
    one_of,
    sum_rate,
    sum_total,
)

from .. import thresholds
from ..layout import Row
from ..panels import bargauge, gauge, table, timeseries
from ..targets import Q, instant, table_q
from .common import BASIC_FEATURES, DOCS, FEATURES, QUOTA, tier_title

DOC_TIME = m("clary_document_processing_duration_seconds")
HTTP = m("clary_http_requests_total")
QUOTA_REFUSED = "429"  # the status a request refused for its quota gets (Too Many Requests)


def lite_basic_documents_row() -> Row:
    tier = "lite"
    t = {"tier": tier}
    basic = {"feature": one_of(BASIC_FEATURES)}
    return Row(
        tier_title(tier, "basic document metrics"),
        [
            table(
                "Documents by type and outcome",
                "Documents processed in the selected time range, per document type and outcome.",
                "short",
                table_q(sum_total(DOCS, ("doc_type", "outcome"), **t)),
                value_column="Documents",
                sort_by="Documents",
                descending=True,
                w=8,
            ),
            bargauge(
                "Mean processing time by type",
                "Mean wall time to process one document of each type in the selected time range.",
                "s",
                instant(hist_mean_range(DOC_TIME, ("doc_type",), **t), "{{doc_type}}"),
                w=8,
            ),
            timeseries(
                "Basic features by outcome",
                f"Uses per second of the basic features ({', '.join(BASIC_FEATURES)}), by outcome.",
                "ops",
                Q(sum_rate(FEATURES, ("feature", "outcome"), **t, **basic), "{{feature}} {{outcome}}"),
                w=8,
            ),
        ],
    )


def lite_api_limits_row() -> Row:
    tier = "lite"
    t = {"tier": tier}
    api = {"limit": "api_calls"}
    return Row(
        tier_title(tier, "API usage against limits"),
        [
            gauge(
                "API-call allowance used (highest)",
                "The highest api_calls usage / limit ratio over all Lite licenses (a limit of 0 "
                "gives no ratio).",
                "percentunit",
                Q(agg(compliance(**t, **api), op="max")),
                max_=1.2,
                thresholds=thresholds.compliance(),
            ),
            bargauge(
                "API-call allowance by license",
                "The ten Lite licenses closest to (or over) their api_calls limit.",
                "percentunit",
                instant(f"topk(10, {compliance(**t, **api)})", "{{license}}"),
                max_=1.2,
                thresholds=thresholds.compliance(),
                w=6,
            ),
            table(
                "API calls used and allowed per license",
                "Current api_calls usage and limit of every Lite license.",
                "short",
                table_q(agg(m("clary_license_usage").sel(**t, **api), ("license",), op="max")),
                table_q(agg(m("clary_license_limit").sel(**t, **api), ("license",), op="max")),
                columns=("Used", "Limit"),
                sort_by="Used",
                descending=True,
                w=12,
            ),
            timeseries(
                "API calls served vs refused by quota",
                "Lite API requests served per second (every status but 429) and requests refused "
                "because the api_calls quota was exhausted (each refusal is answered 429, so it is "
                "counted once, as refused).",
                "reqps",
                Q(sum_rate(HTTP, **t, code=not_equal(QUOTA_REFUSED)), "served"),
                Q(sum_rate(QUOTA, **t, **api), "refused (api_calls quota)"),
                w=24,
            ),
        ],
    )
