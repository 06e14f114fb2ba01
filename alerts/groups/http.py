"""clary-http: the availability SLO (multiwindow burn rates), 5xx spikes, p95 latency per tier."""

from __future__ import annotations

from typing import Any

from exporter.promql import m, regex

from ..config import BURN_RATE_WINDOWS, SLO_PERIOD_DAYS, SLO_WINDOWS, TIERS, Config, num, pct, seconds
from .common import RuleGroup, bucket_rate_over, quantile_name, rate_or_zero, ratio, sum_rate_over

REQUESTS = m("clary_http_requests_total")
DURATION = m("clary_http_request_duration_seconds")


def http_group(cfg: Config) -> dict[str, Any]:
    g = RuleGroup("clary-http", cfg)
    for w in SLO_WINDOWS:
        requests = g.record(f"tier:clary_http_requests:rate{w}", sum_rate_over(REQUESTS, w, ("tier",)))
        errors = g.record(
            f"tier:clary_http_errors:rate{w}",
            rate_or_zero(sum_rate_over(REQUESTS, w, ("tier",), code=regex("5..")), requests),
        )
        g.record(f"tier:clary_http_errors_per_request:ratio_rate{w}", ratio(errors, requests))
    buckets = g.record("tier_le:clary_http_request_duration_seconds_bucket:rate5m", bucket_rate_over(DURATION, "5m", ("tier",)))
    for q in cfg.quantiles:
        g.record(f"tier:clary_http_request_duration_seconds:{quantile_name(q)}_rate5m", f"histogram_quantile({num(q)}, {buckets})")

    budget = cfg.error_budget
    slo = pct(cfg.slo_target)
    for b in BURN_RATE_WINDOWS:
        threshold = f"({num(b.factor)} * {num(budget)})"
        long_ratio = g.series(f"tier:clary_http_errors_per_request:ratio_rate{b.long}")
        short_ratio = g.series(f"tier:clary_http_errors_per_request:ratio_rate{b.short}")
        short_requests = g.series(f"tier:clary_http_requests:rate{b.short}")
        g.alert(
            "ClaryErrorBudgetBurn",
            f"""
            {long_ratio} > {threshold}
            and on (tier)
            {short_ratio} > {threshold}
            and on (tier)
            {short_requests} * {seconds(b.short)} >= {cfg.burn_rate_min_requests}
            """,
            severity=b.severity,
            team="sre",
            for_=b.for_,
            labels={"long_window": b.long, "short_window": b.short},
            summary=f"Tier {{{{ $labels.tier }}}} is burning its {slo} availability error budget {num(b.factor)}x too fast ({b.long}/{b.short}).",
            description=(
                f"{{{{ $value | humanizePercentage }}}} of tier {{{{ $labels.tier }}}} requests answered HTTP 5xx over the last {b.long}, "
                f"and the last {b.short} is above the threshold too: the error budget of the {slo} SLO burns "
                f"at {num(b.factor)}x the sustainable rate (threshold {pct(b.factor * budget)}). "
                f"Left alone, the {SLO_PERIOD_DAYS}-day budget is gone in {SLO_PERIOD_DAYS / b.factor:.3g} days."
            ),
        )
    g.alert(
        "ClaryHttpErrorSpike",
        f"""
        {g.series("tier:clary_http_errors_per_request:ratio_rate30m")} > {num(cfg.error_spike_ratio)}
        and on (tier)
        {g.series("tier:clary_http_errors:rate30m")} * 1800 >= {cfg.error_spike_min_errors}
        """,
        severity="warning",
        team="sre",
        for_="5m",
        summary="Tier {{ $labels.tier }} has a spike of HTTP 5xx errors.",
        description=(
            "{{ $value | humanizePercentage }} of tier {{ $labels.tier }} requests answered HTTP 5xx over the last 30m "
            f"(threshold {pct(cfg.error_spike_ratio)}, at least {cfg.error_spike_min_errors} errors). "
            "This catches low-traffic tiers, where burn-rate alerts need more requests than there are."
        ),
    )
    for tier in TIERS:
        threshold = cfg.latency_p95_seconds[tier]
        g.alert(
            "ClaryHttpLatencyHigh",
            f"""
            {g.series("tier:clary_http_request_duration_seconds:p95_rate5m", tier=tier)} > {num(threshold)}
            and on (tier)
            {g.series("tier:clary_http_requests:rate5m")} * 300 >= {cfg.latency_min_requests}
            """,
            severity="warning",
            team="sre",
            for_="10m",
            # One rule per tier (thresholds differ); the static label keeps promtool's lint
            # from reading three same-named rules as duplicates.
            labels={"tier": tier},
            summary="Tier {{ $labels.tier }} p95 HTTP latency is above its threshold.",
            description=(
                "The p95 latency of tier {{ $labels.tier }} requests is {{ $value | humanizeDuration }} "
                f"over the last 5m (threshold {num(threshold)}s)."
            ),
        )
    return g.build()
