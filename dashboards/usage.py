"""Usage dashboard (one per tier): documents, features, API calls, users."""

from __future__ import annotations

from exporter.promql import (
    hist_buckets,
    hist_mean,
    hist_mean_range,
    m,
    max_gauge,
    quantile,
    rate_ratio,
    regex,
    sum_rate,
    sum_total,
    total_ratio,
)

from . import thresholds, tier_rows
from .common import Built, per_replica, tier_dashboard
from .layout import Row
from .panels import bargauge, heatmap, piechart, stat, timeseries
from .styling import steps
from .targets import Q, instant
from .workflows import workflows_row

KIND = "usage"

DOCS = m("clary_documents_processed_total")
DOC_TIME = m("clary_document_processing_duration_seconds")
FEATURES = m("clary_feature_uses_total")
FEATURES_PER_DOC = m("clary_features_per_document")
HTTP = m("clary_http_requests_total")
ERRORS = m("clary_errors_total")
ACTIVE_USERS = m("clary_active_users")
SESSION = m("clary_session_duration_seconds")
ACTIONS = m("clary_user_actions_total")

ERROR_CODES = regex("5..")


def documents_row(tier: str) -> Row:
    t = {"tier": tier}
    return Row(
        "Documents",
        [
            stat(
                "Documents processed",
                "Documents processed in the selected time range, all types and outcomes.",
                "short",
                instant(sum_total(DOCS, **t)),
                graph=False,
            ),
            stat(
                "Document success ratio",
                "Share of documents processed successfully over the selected time range.",
                "percentunit",
                instant(total_ratio(DOCS, {"outcome": "success"}, **t)),
                thresholds=[{"color": "red", "value": None}, {"color": "orange", "value": 0.95},
                            {"color": "green", "value": 0.99}],
                graph=False,
                decimals=2,
            ),
            stat(
                "Document throughput",
                "Documents processed per second, now.",
                "ops",
                Q(sum_rate(DOCS, **t)),
            ),
            stat(
                "Mean processing time",
                "Mean wall time to process one document over the selected time range.",
                "s",
                instant(hist_mean_range(DOC_TIME, **t)),
                graph=False,
            ),
            timeseries(
                "Documents processed by type and outcome",
                "Documents per second, by document type and outcome (stacked).",
                "ops",
                Q(sum_rate(DOCS, ("doc_type", "outcome"), **t), "{{doc_type}} {{outcome}}"),
                stack=True,
                w=16,
            ),
            piechart(
                "Documents by type",
                "Share of each document type among documents processed in the selected time range.",
                "short",
                instant(sum_total(DOCS, ("doc_type",), **t), "{{doc_type}}"),
            ),
            timeseries(
                "Document failure ratio by type",
                "Failed documents divided by all documents, per document type.",
                "percentunit",
                Q(rate_ratio(DOCS, {"outcome": "failure"}, ("doc_type",), **t), "{{doc_type}}"),
                min_=0,
                w=24,
            ),
        ],
    )


def processing_time_row(tier: str) -> Row:
    t = {"tier": tier}
    return Row(
        "Processing time",
        [
            timeseries(
                "Processing time p50 / p95 / p99",
                "Document processing time quantiles, from the processing-duration histogram.",
                "s",
                Q(quantile(0.5, DOC_TIME, **t), "p50"),
                Q(quantile(0.95, DOC_TIME, **t), "p95"),
                Q(quantile(0.99, DOC_TIME, **t), "p99"),
                w=8,
            ),
            timeseries(
                "p95 processing time by document type",
                "95th percentile of document processing time per document type.",
                "s",
                Q(quantile(0.95, DOC_TIME, ("doc_type",), **t), "{{doc_type}}"),
                w=8,
            ),
            heatmap(
                "Processing time distribution",
                "How many documents fell into each processing-time bucket, over time.",
                "s",
                hist_buckets(DOC_TIME, **t),
                w=8,
            ),
        ],
    )


def features_row(tier: str) -> Row:
    t = {"tier": tier}
    return Row(
        "Features",
        [
            timeseries(
                "Feature uses by feature",
                "Feature invocations per second, by feature (stacked).",
                "ops",
                Q(sum_rate(FEATURES, ("feature",), **t), "{{feature}}"),
                stack=True,
                w=12,
            ),
            bargauge(
                "Features used",
                "Feature invocations per feature in the selected time range.",
                "short",
                instant(sum_total(FEATURES, ("feature",), **t), "{{feature}}"),
                w=12,
            ),
            timeseries(
                "Feature failure ratio by feature",
                "Failed feature invocations divided by all invocations, per feature.",
                "percentunit",
                Q(rate_ratio(FEATURES, {"outcome": "failure"}, ("feature",), **t), "{{feature}}"),
                min_=0,
                w=12,
            ),
            timeseries(
                "Features per document (mean)",
                "Mean number of features applied to one document.",
                "short",
                Q(hist_mean(FEATURES_PER_DOC, **t), "mean"),
                w=6,
            ),
            bargauge(
                "Features per document",
                "Distribution of the number of features applied per document in the selected "
                "time range (bucket upper bounds).",
                "short",
                instant(hist_buckets(FEATURES_PER_DOC, over_range=True, **t), "<= {{le}}", fmt="heatmap"),
                w=6,
            ),
        ],
    )


def api_row(tier: str) -> Row:
    t = {"tier": tier}
    return Row(
        "API calls and errors",
        [
            timeseries(
                "API calls by route",
                "HTTP requests per second, by route template.",
                "reqps",
                Q(sum_rate(HTTP, ("route",), **t), "{{route}}"),
                w=12,
            ),
            timeseries(
                "API calls by status code",
                "HTTP requests per second, by status code (stacked).",
                "reqps",
                Q(sum_rate(HTTP, ("code",), **t), "{{code}}"),
                stack=True,
                w=12,
            ),
            timeseries(
                "Error rate (5xx ratio)",
                "Share of HTTP requests answered with a 5xx status.",
                "percentunit",
                Q(rate_ratio(HTTP, {"code": ERROR_CODES}, **t), "5xx ratio"),
                min_=0,
                thresholds=thresholds.error_ratio_line(tier),
                w=8,
            ),
            timeseries(
                "Unhandled exceptions by type",
                "Exceptions raised by request handlers per second, by exception type.",
                "ops",
                Q(sum_rate(ERRORS, ("error_type",), **t), "{{error_type}}"),
                w=8,
            ),
            stat(
                "API calls",
                "HTTP requests served in the selected time range.",
                "short",
                instant(sum_total(HTTP, **t)),
                graph=False,
                w=4,
            ),
            stat(
                "Errors (5xx)",
                "HTTP requests answered with a 5xx status in the selected time range.",
                "short",
                instant(sum_total(HTTP, code=ERROR_CODES, **t)),
                graph=False,
                thresholds=steps(("red", 1)),
                w=4,
            ),
        ],
    )


def users_row(tier: str) -> Row:
    t = {"tier": tier}
    return Row(
        "Users",
        [
            stat(
                "Active users",
                "Distinct users seen in the last 5 minutes, hour and day (HyperLogLog estimate). "
                + per_replica("users"),
                "short",
                Q(max_gauge(ACTIVE_USERS, ("window",), **t), "{{window}}"),
                w=8,
                text_mode="value_and_name",
            ),
            timeseries(
                "Active users by window",
                "Distinct users in the 5m, 1h and 24h windows over time. " + per_replica("users"),
                "short",
                Q(max_gauge(ACTIVE_USERS, ("window",), **t), "{{window}}"),
                w=8,
            ),
            timeseries(
                "Session duration p50 / p95 and mean",
                "Length of finished user sessions.",
                "s",
                Q(quantile(0.5, SESSION, **t), "p50"),
                Q(quantile(0.95, SESSION, **t), "p95"),
                Q(hist_mean(SESSION, **t), "mean"),
                w=8,
            ),
            timeseries(
                "User actions by action",
                "User actions per second, by action (stacked).",
                "ops",
                Q(sum_rate(ACTIONS, ("action",), **t), "{{action}}"),
                stack=True,
                w=12,
            ),
            piechart(
                "User actions",
                "Share of each action among user actions in the selected time range.",
                "short",
                instant(sum_total(ACTIONS, ("action",), **t), "{{action}}"),
                w=12,
            ),
        ],
    )


def rows(tier: str) -> list[Row]:
    return [
        documents_row(tier),
        processing_time_row(tier),
        features_row(tier),
        api_row(tier),
        users_row(tier),
        workflows_row(tier),
        *tier_rows.extra_rows(tier, KIND),
    ]


# Tile -> the panel that explains it (dashboards.links.with_details).
DETAILS = {
    "Documents processed": "Documents processed by type and outcome",
    "Document success ratio": "Document failure ratio by type",
    "Document throughput": "Documents processed by type and outcome",
    "Mean processing time": "Processing time p50 / p95 / p99",
    "API calls": "API calls by route",
    "Errors (5xx)": "API calls by status code",
    "Active users": "Active users by window",
}


def dashboard(tier: str) -> Built:
    return tier_dashboard(
        tier,
        KIND,
        f"How {tier} customers use Clary: documents processed by type and outcome, processing "
        "time, features, API calls and errors, active users, sessions and actions, workflow transitions and funnels.",
        rows(tier),
        DETAILS,
    )
