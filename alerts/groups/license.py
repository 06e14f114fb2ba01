"""clary-license: validation errors and rejected keys, silence, expiry, usage against license limits.

Routing by cause: validations that *errored* (``result="error"``: the
license service is broken, paying customers are locked out) page the SRE
on-call; rejected keys (invalid, expired, revoked: a customer problem, often
one client retrying), expiry and compliance are tickets for the licensing
team (``team="licensing"``, routed by team before severity).
"""

from __future__ import annotations

from typing import Any

from exporter.promql import agg, m, not_equal, on, one_of

from ..config import TIERS, Config, num, pct
from .common import (
    RuleGroup,
    max_by,
    ratio,
    sum_increase_over,
    sum_rate_over,
)

LICENSE_WINDOWS: tuple[str, ...] = ("5m", "30m", "1h")
# A key the license service answered about, but refused: the customer's problem, not the service's.
REJECTED = ("invalid", "expired", "revoked")

VALIDATIONS = m("clary_license_validations_total")
EXPIRY = m("clary_license_expiry_timestamp_seconds")
USAGE = m("clary_license_usage")
LIMIT = m("clary_license_limit")
HTTP_REQUESTS = m("clary_http_requests_total")


def license_group(cfg: Config) -> dict[str, Any]:
    g = RuleGroup("clary-license", cfg)
    for w in LICENSE_WINDOWS:
        validations = g.record(f"tier:clary_license_validations:rate{w}", sum_rate_over(VALIDATIONS, w, ("tier",)))
        g.record_share(f"tier:clary_license_validation_failures:rate{w}",
                       f"tier:clary_license_validation_failures_per_validation:ratio_rate{w}",
                       sum_rate_over(VALIDATIONS, w, ("tier",), result=not_equal("valid")), validations)
    g.record_share("tier:clary_license_validation_rejections:rate30m",
                   "tier:clary_license_validation_rejections_per_validation:ratio_rate30m",
                   sum_rate_over(VALIDATIONS, "30m", ("tier",), result=one_of(REJECTED)),
                   g.series("tier:clary_license_validations:rate30m"))
    g.record_share("tier:clary_license_validation_errors:rate5m",
                   "tier:clary_license_validation_errors_per_validation:ratio_rate5m",
                   sum_rate_over(VALIDATIONS, "5m", ("tier",), result="error"),
                   g.series("tier:clary_license_validations:rate5m"))
    # Replicas may each report a license; the latest known expiry wins. 0 = unknown.
    expiry = g.record(
        "license_tier:clary_license_expiry_timestamp_seconds:max",
        agg(f"{EXPIRY.sel()} > 0", EXPIRY.grouping(("license", "tier")), op="max"),
    )
    per_limit = ("license", "tier", "limit")
    usage = g.record(
        "license_tier_limit:clary_license_usage_per_limit:ratio",
        ratio(max_by(USAGE, per_limit), max_by(LIMIT, per_limit)),
    )

    g.alert(
        "ClaryLicenseValidationFailureRatioHigh",
        f"""
        {g.series("tier:clary_license_validation_rejections_per_validation:ratio_rate30m")} > {num(cfg.license_failure_ratio)}
        and {on("tier")}
        {g.series("tier:clary_license_validations:rate30m")} * 1800 >= {cfg.license_failure_min_validations}
        """,
        severity="warning",
        team="licensing",
        for_="15m",
        summary="Tier {{ $labels.tier }} license keys are rejected too often.",
        description=(
            "{{ $value | humanizePercentage }} of tier {{ $labels.tier }} license validations over the last 30m "
            f"rejected the key as {', '.join(REJECTED)} (threshold {pct(cfg.license_failure_ratio)}, at least "
            f"{cfg.license_failure_min_validations} validations): customers with lapsed or wrong keys, or a client retrying one."
        ),
    )
    g.alert(
        "ClaryLicenseValidationErrors",
        f"""
        {g.series("tier:clary_license_validation_errors_per_validation:ratio_rate5m")} > {num(cfg.license_error_ratio)}
        and {on("tier")}
        {g.series("tier:clary_license_validation_errors:rate5m")} * 300 >= {cfg.license_error_min_errors}
        """,
        severity="critical",
        team="sre",
        for_="5m",
        summary="Tier {{ $labels.tier }} license validations are erroring: the license service is failing.",
        description=(
            "{{ $value | humanizePercentage }} of tier {{ $labels.tier }} license validations over the last 5m ended in "
            f"result=error (threshold {pct(cfg.license_error_ratio)}, at least {cfg.license_error_min_errors} errors): "
            "the license service could not answer, so paying customers are probably being locked out."
        ),
    )
    g.alert(
        "ClaryLicenseValidationsStopped",
        f"""
        {sum_increase_over(HTTP_REQUESTS, "1h", ("tier",), tier=one_of(TIERS))} >= {cfg.license_stopped_min_requests}
        unless {on("tier")}
        {g.series("tier:clary_license_validations:rate1h")} > 0
        """,
        severity="warning",
        team="sre",
        for_="15m",
        summary="Tier {{ $labels.tier }} serves traffic but validates no licenses.",
        description=(
            "Tier {{ $labels.tier }} served {{ $value | printf \"%.0f\" }} requests over the last hour "
            "without a single license validation: the license check is bypassed or not reporting."
        ),
    )
    days = cfg.license_expiry_warning_days
    g.alert(
        "ClaryLicenseExpiring",
        f"""
        {expiry} - time() < {num(days * 86400)}
        and
        {expiry} - time() > 0
        """,
        severity="warning",
        team="licensing",
        for_="15m",
        summary=f"License {{{{ $labels.license }}}} ({{{{ $labels.tier }}}}) expires in less than {num(days)} days.",
        description=(
            "License {{ $labels.license }} of tier {{ $labels.tier }} expires in {{ $value | humanizeDuration }} "
            f"(alerting below {num(days)} days): a renewal for the account team, not a page."
        ),
    )
    g.alert(
        "ClaryLicenseExpired",
        f"time() - {expiry} >= 0",
        severity="warning",
        team="licensing",
        for_="5m",
        summary="License {{ $labels.license }} ({{ $labels.tier }}) has expired.",
        description="License {{ $labels.license }} of tier {{ $labels.tier }} expired {{ $value | humanizeDuration }} ago.",
    )
    g.alert(
        "ClaryLicenseUsageOverLimit",
        f"{usage} > 1",
        severity="warning",
        team="licensing",
        for_="15m",
        summary="License {{ $labels.license }} ({{ $labels.tier }}) is over its {{ $labels.limit }} limit.",
        description=(
            "License {{ $labels.license }} of tier {{ $labels.tier }} uses {{ $value | humanizePercentage }} "
            "of its {{ $labels.limit }} limit: a compliance issue for the account team."
        ),
    )
    g.alert(
        "ClaryLicenseUsageNearLimit",
        f"""
        {usage} > {num(cfg.license_usage_near_ratio)}
        and
        {usage} <= 1
        """,
        severity="info",
        team="licensing",
        for_="30m",
        summary="License {{ $labels.license }} ({{ $labels.tier }}) is close to its {{ $labels.limit }} limit.",
        description=(
            "License {{ $labels.license }} of tier {{ $labels.tier }} uses {{ $value | humanizePercentage }} "
            f"of its {{{{ $labels.limit }}}} limit (informing above {pct(cfg.license_usage_near_ratio)}): an upsell conversation."
        ),
    )
    return g.build()
