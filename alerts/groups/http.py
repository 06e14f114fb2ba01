"""clary-http: 5xx spikes on low-traffic tiers and p95 latency per tier.

The availability and latency SLOs (burn rates over 5m .. 3d) are in
``clary-slo`` (:mod:`alerts.groups.slo`); this group records only the
windows its own alerts read.
"""

from __future__ import annotations

from typing import Any

from exporter.promql import m, on, regex

from ..config import TIERS, Config, num, pct
from .common import (
    RuleGroup,
    bucket_rate_over,
    quantile_name,
    sum_rate_over,
)

# The windows the alerts below read: ClaryHttpLatencyHigh's 5m, ClaryHttpErrorSpike's 30m.
HTTP_WINDOWS = ("5m", "30m")

REQUESTS = m("clary_http_requests_total")
DURATION = m("clary_http_request_duration_seconds")


def http_group(cfg: Config) -> dict[str, Any]:
    g = RuleGroup("clary-http", cfg)
    for w in HTTP_WINDOWS:
        requests = g.record(f"tier:clary_http_requests:rate{w}", sum_rate_over(REQUESTS, w, ("tier",)))
        g.record_share(f"tier:clary_http_errors:rate{w}", f"tier:clary_http_errors_per_request:ratio_rate{w}",
                       sum_rate_over(REQUESTS, w, ("tier",), code=regex("5..")), requests)
    buckets = g.record("tier_le:clary_http_request_duration_seconds_bucket:rate5m", bucket_rate_over(DURATION, "5m", ("tier",)))
    for q in cfg.quantiles:
        g.record(f"tier:clary_http_request_duration_seconds:{quantile_name(q)}_rate5m", f"histogram_quantile({num(q)}, {buckets})")

    g.alert(
        "ClaryHttpErrorSpike",
        f"""
        {g.series("tier:clary_http_errors_per_request:ratio_rate30m")} > {num(cfg.error_spike_ratio)}
        and {on("tier")}
        {g.series("tier:clary_http_errors:rate30m")} * 1800 >= {cfg.error_spike_min_errors}
        """,
        severity="warning",
        team="sre",
        for_="5m",
        summary="Tier {{ $labels.tier }} has a spike of HTTP 5xx errors.",
        description=(
            "{{ $value | humanizePercentage }} of tier {{ $labels.tier }} requests answered HTTP 5xx over the last 30m "
            f"(threshold {pct(cfg.error_spike_ratio)}, at least {cfg.error_spike_min_errors} errors). "
            "This catches low-traffic tiers, where the availability SLO's burn-rate alerts need more requests than there are."
        ),
    )
    for tier in TIERS:
        threshold = cfg.latency_p95_seconds[tier]
        g.alert(
            "ClaryHttpLatencyHigh",
            f"""
            {g.series("tier:clary_http_request_duration_seconds:p95_rate5m", tier=tier)} > {num(threshold)}
            and {on("tier")}
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
