"""clary-inference: failure ratios per tier and model, latency quantiles per model."""

from __future__ import annotations

from typing import Any

from exporter.promql import m, on

from ..config import Config, num, pct
from .common import (
    RuleGroup,
    bucket_rate_over,
    quantile_name,
    rate_or_zero,
    ratio,
    sum_rate_over,
)

# Recorded at (tier, model) from the raw counter; the coarser levels sum those.
INFERENCE_LEVELS: tuple[tuple[str, ...], ...] = (("tier", "model"), ("tier",), ("model",))

REQUESTS = m("clary_inference_requests_total")
DURATION = m("clary_inference_duration_seconds")


def inference_group(cfg: Config) -> dict[str, Any]:
    g = RuleGroup("clary-inference", cfg)
    base_requests = "tier_model:clary_inference_requests:rate5m"
    base_failures = "tier_model:clary_inference_failures:rate5m"
    for level in INFERENCE_LEVELS:
        prefix = "_".join(level)
        requests = f"{prefix}:clary_inference_requests:rate5m"
        failures = f"{prefix}:clary_inference_failures:rate5m"
        if requests == base_requests:
            g.record(requests, sum_rate_over(REQUESTS, "5m", level))
            g.record(failures, rate_or_zero(sum_rate_over(REQUESTS, "5m", level, outcome="failure"), requests))
        else:
            g.record(requests, g.sum_by(base_requests, level))
            g.record(failures, g.sum_by(base_failures, level))
        g.record(f"{prefix}:clary_inference_failures_per_request:ratio_rate5m", ratio(failures, requests))
    buckets = g.record("model_le:clary_inference_duration_seconds_bucket:rate5m", bucket_rate_over(DURATION, "5m", ("model",)))
    for q in cfg.quantiles:
        g.record(f"model:clary_inference_duration_seconds:{quantile_name(q)}_rate5m", f"histogram_quantile({num(q)}, {buckets})")

    failure_ratio = g.series("model:clary_inference_failures_per_request:ratio_rate5m")
    guard = f"and {on('model')}\n{g.series('model:clary_inference_requests:rate5m')} * 300 >= {cfg.inference_min_requests}"
    g.alert(
        "ClaryInferenceFailureRatioHigh",
        f"{failure_ratio} > {num(cfg.inference_failure_ratio)}\n{guard}",
        severity="warning",
        team="ml",
        for_="10m",
        summary="Model {{ $labels.model }} fails too many inference requests.",
        description=(
            "{{ $value | humanizePercentage }} of inference requests to model {{ $labels.model }} failed over the last 5m "
            f"(threshold {pct(cfg.inference_failure_ratio)}, at least {cfg.inference_min_requests} requests)."
        ),
    )
    g.alert(
        "ClaryModelUnavailable",
        f"{failure_ratio} >= {num(cfg.model_unavailable_ratio)}\n{guard}",
        severity="critical",
        team="ml",
        for_="5m",
        summary="Model {{ $labels.model }} fails (nearly) every inference request: not loaded or failed to load.",
        description=(
            "{{ $value | humanizePercentage }} of inference requests to model {{ $labels.model }} failed over the last 5m "
            f"(threshold {pct(cfg.model_unavailable_ratio)}, at least {cfg.inference_min_requests} requests): "
            "the model is most likely not loaded (a failed load, an evicted or crashed worker)."
        ),
    )
    return g.build()
