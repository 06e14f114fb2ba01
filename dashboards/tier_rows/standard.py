"""Standard-only rows: local model usage and performance (performance dashboard)."""

from __future__ import annotations

from exporter.promql import (
    div,
    m,
    max_gauge,
    one_of,
    quantile,
    rate_ratio,
    sum_gauge,
    sum_rate,
)

from .. import thresholds
from ..layout import Row
from ..panels import stat, timeseries
from ..targets import Q
from .common import DOCS, LOCAL_MODELS, tier_title

INFERENCE = m("clary_inference_requests_total")
INFERENCE_TIME = m("clary_inference_duration_seconds")
LAST_LOAD = m("clary_model_last_load_duration_seconds")
MODEL_MEMORY = m("clary_model_memory_bytes")


def standard_local_models_row() -> Row:
    tier = "standard"
    t = {"tier": tier}
    local = {"model": one_of(LOCAL_MODELS)}
    return Row(
        tier_title(tier, "local model usage and performance"),
        [
            stat(
                "Inferences per document",
                "Local model inference requests per processed document.",
                "short",
                Q(div(sum_rate(INFERENCE, **t, **local), sum_rate(DOCS, **t))),
                decimals=2,
            ),
            stat(
                "Local inference failure ratio",
                "Failed local model inferences divided by all local inferences.",
                "percentunit",
                Q(rate_ratio(INFERENCE, {"outcome": "failure"}, **t, **local)),
                thresholds=thresholds.inference_failures(),
                decimals=2,
            ),
            stat(
                "Local inference p95",
                "95th percentile latency over all local models.",
                "s",
                Q(quantile(0.95, INFERENCE_TIME, **t, **local)),
            ),
            stat(
                "Local model memory",
                "Memory held by loaded local models, all replicas. All tiers: no tier label.",
                "bytes",
                Q(sum_gauge(MODEL_MEMORY, **local)),
            ),
            timeseries(
                "Local model usage",
                "Inference requests per second per local model (stacked).",
                "ops",
                Q(sum_rate(INFERENCE, ("model",), **t, **local), "{{model}}"),
                stack=True,
                w=8,
            ),
            timeseries(
                "Local inference latency p50 / p95 / p99",
                "Inference latency quantiles over all local models.",
                "s",
                *(Q(quantile(q, INFERENCE_TIME, **t, **local), f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)),
                w=8,
            ),
            timeseries(
                "Latest local model load time",
                "How long the most recent load of each local model took, per exporter replica (a step "
                "at each load; a quantile of rare loads is empty minutes later). All tiers: no tier label.",
                "s",
                Q(max_gauge(LAST_LOAD, ("instance", "model"), **local), "{{model}} {{instance}}"),
                w=8,
            ),
        ],
    )
