"""clary-llm: cloud LLM calls (Professional tier) failing or slow, per provider and model.

A provider outage or rate limiting shows as failures; a saturated provider
region as latency. Both are the ML team's, as tickets: the calls are retried
and the documents queue up rather than fail outright (queue backlog and the
document SLO page when customers feel it).
"""

from __future__ import annotations

from typing import Any

from exporter.promql import m, on

from ..config import Config, num, pct
from .common import RuleGroup, bucket_rate_over, sum_rate_over

BY = ("provider", "model")
WINDOW = "15m"

REQUESTS = m("clary_llm_requests_total")
DURATION = m("clary_llm_request_duration_seconds")


def llm_group(cfg: Config) -> dict[str, Any]:
    g = RuleGroup("clary-llm", cfg)
    requests = g.record(f"provider_model:clary_llm_requests:rate{WINDOW}", sum_rate_over(REQUESTS, WINDOW, BY))
    failures, failure_ratio = g.record_share(
        f"provider_model:clary_llm_failures:rate{WINDOW}", f"provider_model:clary_llm_failures_per_request:ratio_rate{WINDOW}",
        sum_rate_over(REQUESTS, WINDOW, BY, outcome="failure"), requests)
    buckets = g.record(f"provider_model_le:clary_llm_request_duration_seconds_bucket:rate{WINDOW}",
                       bucket_rate_over(DURATION, WINDOW, BY))
    p95 = g.record(f"provider_model:clary_llm_request_duration_seconds:p95_rate{WINDOW}", f"histogram_quantile(0.95, {buckets})")
    enough = f"and {on(*BY)}\n{g.series(requests)} * 900 >= {cfg.llm_min_requests}"

    g.alert(
        "ClaryLlmFailureRatioHigh",
        f"{g.series(failure_ratio)} > {num(cfg.llm_failure_ratio)}\n{enough}",
        severity="warning",
        team="ml",
        for_="10m",
        summary="Cloud LLM {{ $labels.provider }}/{{ $labels.model }} fails too many calls.",
        description=(
            "{{ $value | humanizePercentage }} of calls to {{ $labels.provider }} model {{ $labels.model }} failed over "
            f"the last {WINDOW} (threshold {pct(cfg.llm_failure_ratio)}, at least {cfg.llm_min_requests} calls): "
            "a provider outage, rate limiting or an expired API key."
        ),
    )
    g.alert(
        "ClaryLlmLatencyHigh",
        f"{g.series(p95)} > {num(cfg.llm_latency_p95_seconds)}\n{enough}",
        severity="warning",
        team="ml",
        for_="15m",
        summary="Cloud LLM {{ $labels.provider }}/{{ $labels.model }} answers slowly.",
        description=(
            "The p95 latency of calls to {{ $labels.provider }} model {{ $labels.model }} is {{ $value | humanizeDuration }} "
            f"over the last {WINDOW} (threshold {num(cfg.llm_latency_p95_seconds)}s, at least {cfg.llm_min_requests} calls)."
        ),
    )
    return g.build()
