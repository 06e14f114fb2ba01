"""Overview dashboard: every tier side by side (``sum by (tier)``; ``max`` for shared state and distinct counts)."""

from __future__ import annotations

from exporter.catalog import TIERS
from exporter.promql import (
    agg,
    compliance,
    days_to_expiry,
    hist_mean_range,
    m,
    max_gauge,
    not_equal,
    quantile,
    rate_ratio,
    regex,
    sum_gauge,
    sum_rate,
    sum_total,
    total_ratio,
)

from . import thresholds
from .common import (
    KINDS,
    OVERVIEW_FOLDER,
    OVERVIEW_UID,
    Built,
    make_dashboard,
    overview_links,
    per_replica,
    tier_title,
    uid_for,
)
from .layout import Row
from .license import COMPLIANCE_NOTE, EXPIRY_NOTE
from .links import rows_to_tiers
from .panels import bargauge, stat, text, timeseries
from .performance import collectors_tile
from .slo_rows import overview_slo_row
from .styling import steps
from .targets import Q, instant

KIND = "overview"
BY_TIER = ("tier",)

HTTP = m("clary_http_requests_total")
LATENCY = m("clary_http_request_duration_seconds")
DOCS = m("clary_documents_processed_total")
ACTIVE_USERS = m("clary_active_users")
VALIDATIONS = m("clary_license_validations_total")
ACTIVE_LICENSES = m("clary_licenses_active")
QUOTA = m("clary_quota_exceeded_total")
BLOCKED = m("clary_feature_blocked_total")
SUBMISSIONS = m("clary_feedback_submissions_total")
RATING = m("clary_feedback_rating")
URGENT = m("clary_feedback_urgent_total")
LLM_TOKENS = m("clary_llm_tokens_total")
IN_FLIGHT = m("clary_http_requests_in_flight")
QUEUE = m("clary_queue_length")


def directory() -> str:
    """Markdown table linking every tier dashboard."""
    lines = ["| Tier | " + " | ".join(k.capitalize() for k in KINDS) + " |", "|---" * (len(KINDS) + 1) + "|"]
    for tier in TIERS:
        cells = [f"[{kind.capitalize()}](/d/{uid_for(tier, kind)})" for kind in KINDS]
        lines.append(f"| **{tier_title(tier)}** | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def directory_row() -> Row:
    return Row(
        "Dashboards",
        [
            text(
                "Tier dashboards",
                "Links to each tier's Usage, Performance, License and Feedback dashboards.",
                directory(),
                h=5,
            ),
        ],
    )


def traffic_row() -> Row:
    return Row(
        "Traffic and errors",
        [
            timeseries(
                "Request rate by tier",
                "HTTP requests per second, per tier (stacked).",
                "reqps",
                Q(sum_rate(HTTP, BY_TIER), "{{tier}}"),
                stack=True,
                w=6,
            ),
            timeseries(
                "Error ratio (5xx) by tier",
                "Share of HTTP requests answered with a 5xx status, per tier.",
                "percentunit",
                Q(rate_ratio(HTTP, {"code": regex("5..")}, BY_TIER), "{{tier}}"),
                min_=0,
                thresholds=thresholds.error_spike(),
                w=6,
            ),
            timeseries(
                "Latency p95 by tier",
                "95th percentile HTTP request latency per tier (histogram_quantile over "
                "sum by (le, tier)).",
                "s",
                Q(quantile(0.95, LATENCY, BY_TIER), "{{tier}}"),
                w=6,
            ),
            timeseries(
                "Documents processed by tier",
                "Documents processed per second, per tier (stacked).",
                "ops",
                Q(sum_rate(DOCS, BY_TIER), "{{tier}}"),
                stack=True,
                w=6,
            ),
            bargauge(
                "Documents processed",
                "Documents processed per tier in the selected time range.",
                "short",
                instant(sum_total(DOCS, BY_TIER), "{{tier}}"),
                w=8,
                h=6,
            ),
            bargauge(
                "Document failure ratio",
                "Failed documents divided by all documents, per tier, in the selected time range.",
                "percentunit",
                instant(total_ratio(DOCS, {"outcome": "failure"}, BY_TIER), "{{tier}}"),
                max_=1,
                thresholds=thresholds.document_failures(),
                w=8,
                h=6,
            ),
            stat(
                "In flight / queued",
                "HTTP requests being served (summed: each replica serves its own) and jobs waiting "
                "in all work queues (no tier label). A queue is shared state every replica may report: "
                "each queue counts once, at the highest length reported, then queues are added.",
                "short",
                Q(sum_gauge(IN_FLIGHT), "in flight"),
                Q(f"sum({max_gauge(QUEUE, ('queue',))})", "queued"),
                text_mode="value_and_name",
                w=8,
                h=6,
            ),
        ],
    )


def users_row() -> Row:
    return Row(
        "Users and upgrade potential",
        [
            bargauge(
                "Active users (24h)",
                "Distinct users seen in the last 24 hours, per tier. " + per_replica("users"),
                "short",
                instant(max_gauge(ACTIVE_USERS, BY_TIER, window="24h"), "{{tier}}"),
                w=6,
            ),
            timeseries(
                "Active users (1h) by tier",
                "Distinct users seen in the last hour, per tier. " + per_replica("users"),
                "short",
                Q(max_gauge(ACTIVE_USERS, BY_TIER, window="1h"), "{{tier}}"),
                w=6,
            ),
            timeseries(
                "Blocked feature requests by tier",
                "Requests per second for features outside the caller's tier (upgrade potential).",
                "ops",
                Q(sum_rate(BLOCKED, BY_TIER), "{{tier}}"),
                w=6,
            ),
            timeseries(
                "Quota hits by tier",
                "Requests refused per second because a tier quota was exhausted.",
                "ops",
                Q(sum_rate(QUOTA, BY_TIER), "{{tier}}"),
                w=6,
            ),
        ],
    )


def license_row() -> Row:
    return Row(
        "Licenses",
        [
            timeseries(
                "License validation failure ratio by tier",
                "License validations with a result other than 'valid' divided by all "
                "validations, per tier.",
                "percentunit",
                Q(rate_ratio(VALIDATIONS, {"result": not_equal("valid")}, BY_TIER), "{{tier}}"),
                min_=0,
                thresholds=thresholds.license_rejections(),
                w=8,
            ),
            bargauge(
                "Soonest license expiry",
                "Days until the first license of each tier expires." + EXPIRY_NOTE,
                "d",
                instant(agg(days_to_expiry(("license", "tier")), BY_TIER, op="min"), "{{tier}}"),
                thresholds=thresholds.expiry_days(),
                w=8,
            ),
            bargauge(
                "Highest compliance",
                "The highest usage / limit ratio of any license and limit, per tier." + COMPLIANCE_NOTE,
                "percentunit",
                instant(agg(compliance(("license", "tier", "limit")), BY_TIER, op="max"), "{{tier}}"),
                max_=1.2,
                thresholds=thresholds.compliance(),
                w=4,
            ),
            stat(
                "Active licenses",
                "Distinct licenses validated in the last 24 hours, per tier. " + per_replica("licenses"),
                "short",
                Q(max_gauge(ACTIVE_LICENSES, BY_TIER), "{{tier}}"),
                text_mode="value_and_name",
                w=4,
                h=8,
            ),
        ],
    )


def feedback_row() -> Row:
    return Row(
        "Feedback",
        [
            bargauge(
                "Urgent bug reports",
                "Bug reports rated 2 or lower per tier, in the selected time range.",
                "short",
                instant(sum_total(URGENT, BY_TIER), "{{tier}}"),
                thresholds=steps(("red", 1)),
                w=8,
            ),
            bargauge(
                "Average rating",
                "Mean feedback rating (1..5) per tier in the selected time range.",
                "short",
                instant(hist_mean_range(RATING, BY_TIER), "{{tier}}"),
                min_=1,
                max_=5,
                thresholds=[{"color": "red", "value": None}, {"color": "orange", "value": 3},
                            {"color": "green", "value": 4}],
                decimals=2,
                w=8,
            ),
            timeseries(
                "Feedback submissions by tier",
                "Feedback submissions per second, per tier (stacked).",
                "ops",
                Q(sum_rate(SUBMISSIONS, BY_TIER), "{{tier}}"),
                stack=True,
                w=8,
            ),
        ],
    )


def platform_row() -> Row:
    return Row(
        "Platform",
        [
            timeseries(
                "Cloud LLM tokens by tier",
                "Input plus output cloud LLM tokens per second, per tier.",
                "short",
                Q(sum_rate(LLM_TOKENS, BY_TIER), "{{tier}}"),
                axis_label="tokens/s",
                w=12,
            ),
            collectors_tile(w=12, h=8),
        ],
    )


# Which tier dashboard a panel leads to, by panel title or else row title (dashboards.links); else performance.
LINK_KINDS = {
    "Documents processed by tier": "usage",
    "Documents processed": "usage",
    "Document failure ratio": "usage",
    "Users and upgrade potential": "usage",
    "Licenses": "license",
    "Feedback": "feedback",
    "Cloud LLM tokens by tier": "usage",
}


def dashboard() -> Built:
    d = make_dashboard(
        uid=OVERVIEW_UID,
        title="Clary Overview",
        description="All tiers side by side: traffic, errors, latency, documents, users, "
        "upgrade potential, licenses and feedback, with links to every tier dashboard.",
        tags=["clary", "overview"],
        rows=rows_to_tiers(
            [directory_row(), overview_slo_row(), traffic_row(), users_row(), license_row(), feedback_row(),
             platform_row()],
            LINK_KINDS, "performance"),
        links=overview_links(),
    )
    return Built(folder=OVERVIEW_FOLDER, uid=OVERVIEW_UID, dashboard=d)

