"""License dashboard (one per tier): validations, expiry, limits, compliance.

Expiry and compliance panels read the license recording rules
(:data:`exporter.promql.LICENSE_EXPIRY`, :data:`~exporter.promql.LICENSE_COMPLIANCE`),
so their guards apply here too: a license reported with ``expires_at: 0``
(unknown) has no days to expiry, a limit of 0 gives no ratio (not +Inf), an
expired license reads 0 days. License state is reported identically by every
replica that saw the license, so the rules collapse it with ``max``.
Active licenses are distinct counts: ``max`` over replicas (the deployment's count with a shared
store, a lower bound with one SQLite file per replica), never summed.
"""

from __future__ import annotations

from exporter.promql import (
    agg,
    compliance,
    days_to_expiry,
    m,
    max_gauge,
    not_equal,
    quantile,
    rate_ratio,
    sum_rate,
    sum_total,
)

from . import thresholds, tier_rows
from .common import Built, per_replica, tier_dashboard
from .layout import Row
from .panels import bargauge, gauge, histogram, stat, table, timeseries
from .styling import steps
from .targets import Q, instant, table_q

KIND = "license"

VALIDATIONS = m("clary_license_validations_total")
VALIDATION_TIME = m("clary_license_validation_duration_seconds")
QUOTA = m("clary_quota_exceeded_total")
ACTIVE = m("clary_licenses_active")

FAILED = {"result": not_equal("valid")}
EXPIRY_NOTE = (" 0 means expired. Licenses reported with expires_at 0 (unknown) are left out, as in the "
               "ClaryLicenseExpir* alerts.")
COMPLIANCE_NOTE = " Limits of 0 are left out (no ratio), as in the ClaryLicenseUsage* alerts."
ACTIVE_NOTE = " " + per_replica("licenses")


def validations_row(tier: str) -> Row:
    t = {"tier": tier}
    return Row(
        "Validations",
        [
            stat(
                "Validation failure ratio",
                "Share of license validations whose result was not 'valid' (invalid, expired, "
                "revoked, error).",
                "percentunit",
                Q(rate_ratio(VALIDATIONS, FAILED, **t)),
                thresholds=thresholds.license_rejections(),
                decimals=2,
            ),
            stat(
                "Active licenses",
                "Distinct licenses validated in the last 24 hours." + ACTIVE_NOTE,
                "short",
                Q(max_gauge(ACTIVE, **t)),
            ),
            stat(
                "Soonest expiry",
                "Days until the first of this tier's licenses expires." + EXPIRY_NOTE,
                "d",
                Q(agg(days_to_expiry(**t), op="min")),
                thresholds=thresholds.expiry_days(),
                decimals=1,
            ),
            stat(
                "Failed validations",
                "License validations with a result other than 'valid' in the selected time range.",
                "short",
                instant(sum_total(VALIDATIONS, **t, **FAILED)),
                thresholds=steps(("red", 1)),
                graph=False,
            ),
            timeseries(
                "Validations by result",
                "License validations per second, by result (stacked).",
                "ops",
                Q(sum_rate(VALIDATIONS, ("result",), **t), "{{result}}"),
                stack=True,
                w=8,
            ),
            timeseries(
                "Validation failure ratio",
                "Failed validations (result != valid) divided by all validations, over time.",
                "percentunit",
                Q(rate_ratio(VALIDATIONS, FAILED, **t), "failure ratio"),
                min_=0,
                thresholds=thresholds.license_rejections(),
                w=8,
            ),
            timeseries(
                "Validation latency p50 / p95 / p99",
                "License validation latency quantiles. All tiers: this histogram carries no "
                "tier label.",
                "s",
                *(Q(quantile(q, VALIDATION_TIME), f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)),
                w=8,
            ),
        ],
    )


def expiry_row(tier: str) -> Row:
    t = {"tier": tier}
    return Row(
        "Expiry",
        [
            table(
                "Days to expiry per license",
                "Every license of this tier (hashed id) and the days left until it expires, "
                "soonest first." + EXPIRY_NOTE,
                "d",
                table_q(f"sort({days_to_expiry(**t)})"),
                value_column="Days to expiry",
                sort_by="Days to expiry",
                thresholds=thresholds.expiry_days(),
                w=8,
            ),
            bargauge(
                "Licenses expiring soonest",
                "The ten licenses of this tier closest to expiry." + EXPIRY_NOTE,
                "d",
                instant(f"bottomk(10, {days_to_expiry(**t)})", "{{license}}"),
                thresholds=thresholds.expiry_days(),
                w=8,
            ),
            histogram(
                "Days-to-expiry distribution",
                "How many licenses of this tier expire within each span of days." + EXPIRY_NOTE,
                "d",
                instant(days_to_expiry(**t), "{{license}}"),
                w=8,
            ),
        ],
    )


def compliance_row(tier: str) -> Row:
    t = {"tier": tier}
    return Row(
        "Limits and compliance",
        [
            gauge(
                "Highest compliance",
                "The highest usage / limit ratio over all licenses and limits of this tier; "
                "1 means a limit is fully used." + COMPLIANCE_NOTE,
                "percentunit",
                Q(agg(compliance(**t), op="max")),
                max_=1.2,
                thresholds=thresholds.compliance(),
                w=6,
            ),
            bargauge(
                "Compliance by limit",
                "Highest usage / limit ratio per limit kind (documents, features, api_calls)." + COMPLIANCE_NOTE,
                "percentunit",
                instant(agg(compliance(**t), ("limit",), op="max"), "{{limit}}"),
                max_=1.2,
                thresholds=thresholds.compliance(),
                w=6,
            ),
            table(
                "Usage against limits per license",
                "Usage / limit for every license and limit of this tier, highest first." + COMPLIANCE_NOTE,
                "percentunit",
                table_q(f"sort_desc({compliance(**t)})"),
                value_column="Compliance",
                sort_by="Compliance",
                descending=True,
                thresholds=thresholds.compliance(),
                w=12,
            ),
            timeseries(
                "Quota exceeded by limit",
                "Requests refused per second because a tier quota was exhausted, by limit.",
                "ops",
                Q(sum_rate(QUOTA, ("limit",), **t), "{{limit}}"),
                w=8,
            ),
            stat(
                "Quota exceeded",
                "Requests refused because a quota was exhausted, in the selected time range.",
                "short",
                instant(sum_total(QUOTA, **t)),
                thresholds=steps(("orange", 1)),
                graph=False,
                w=4,
                h=8,
            ),
            timeseries(
                "Active licenses",
                "Distinct licenses validated in the last 24 hours, over time." + ACTIVE_NOTE,
                "short",
                Q(max_gauge(ACTIVE, **t), "active licenses"),
                w=12,
            ),
        ],
    )


def rows(tier: str) -> list[Row]:
    return [
        validations_row(tier),
        expiry_row(tier),
        compliance_row(tier),
        *tier_rows.extra_rows(tier, KIND),
    ]


# Tile -> the panel that explains it (dashboards.links.with_details).
DETAILS = {
    "Validation failure ratio": "Validations by result",
    "Active licenses": "Active licenses",
    "Soonest expiry": "Days to expiry per license",
    "Failed validations": "Validations by result",
    "Highest compliance": "Usage against limits per license",
    "Quota exceeded": "Quota exceeded by limit",
}


def dashboard(tier: str) -> Built:
    return tier_dashboard(
        tier,
        KIND,
        f"License health for the {tier} tier: validations by result and failure ratio, days "
        "to expiry per license, usage against limits (compliance), quota refusals and active "
        "licenses.",
        rows(tier),
        DETAILS,
    )
