"""Professional-only rows: cloud LLM usage and custom templates (usage), cloud LLM performance."""

from __future__ import annotations

from exporter.promql import (
    div,
    hist_buckets,
    m,
    quantile,
    rate_ratio,
    sum_rate,
    sum_total,
    total_ratio,
)

from .. import thresholds
from ..layout import Row
from ..panels import heatmap, stat, table, timeseries
from ..targets import Q, instant, table_q
from .common import tier_title

TEMPLATES = m("clary_template_uses_total")
LLM = m("clary_llm_requests_total")
LLM_TIME = m("clary_llm_request_duration_seconds")
LLM_TTFT = m("clary_llm_time_to_first_token_seconds")
LLM_TOKENS = m("clary_llm_tokens_total")

PROVIDER_MODEL = ("provider", "model")


def professional_llm_usage_row() -> Row:
    tier = "professional"
    t = {"tier": tier}
    return Row(
        tier_title(tier, "cloud LLM usage"),
        [
            stat(
                "LLM requests",
                "Cloud LLM requests in the selected time range.",
                "short",
                instant(sum_total(LLM, **t)),
                graph=False,
            ),
            stat(
                "Tokens in / out",
                "Input (prompt) and output (completion) tokens in the selected time range.",
                "short",
                instant(sum_total(LLM_TOKENS, ("direction",), **t), "{{direction}}"),
                graph=False,
                text_mode="value_and_name",
                w=8,
            ),
            stat(
                "Output tokens per request",
                "Completion tokens per cloud LLM request in the selected time range.",
                "short",
                instant(div(sum_total(LLM_TOKENS, **t, direction="output"), sum_total(LLM, **t))),
                graph=False,
                decimals=0,
                w=4,
            ),
            stat(
                "LLM failure ratio",
                "Failed cloud LLM requests divided by all requests in the selected time range.",
                "percentunit",
                instant(total_ratio(LLM, {"outcome": "failure"}, **t)),
                thresholds=thresholds.llm_failures(),
                graph=False,
                decimals=2,
            ),
            timeseries(
                "LLM requests by provider and model",
                "Cloud LLM requests per second, by provider and model (stacked).",
                "ops",
                Q(sum_rate(LLM, PROVIDER_MODEL, **t), "{{provider}} {{model}}"),
                stack=True,
                w=8,
            ),
            timeseries(
                "LLM tokens per second",
                "Input and output tokens per second, by provider.",
                "short",
                Q(sum_rate(LLM_TOKENS, ("provider", "direction"), **t), "{{provider}} {{direction}}"),
                axis_label="tokens/s",
                w=8,
            ),
            table(
                "Tokens by provider and model",
                "Input and output tokens per provider and model in the selected time range.",
                "short",
                table_q(sum_total(LLM_TOKENS, (*PROVIDER_MODEL, "direction"), **t)),
                value_column="Tokens",
                sort_by="Tokens",
                descending=True,
                w=8,
            ),
        ],
    )


def professional_templates_row() -> Row:
    tier = "professional"
    t = {"tier": tier}
    return Row(
        tier_title(tier, "custom templates"),
        [
            stat(
                "Custom template uses",
                "Extractions run with a customer-defined template in the selected time range.",
                "short",
                instant(sum_total(TEMPLATES, **t, kind="custom")),
                graph=False,
            ),
            stat(
                "Custom template share",
                "Custom template uses divided by all template uses in the selected time range.",
                "percentunit",
                instant(total_ratio(TEMPLATES, {"kind": "custom"}, **t)),
                graph=False,
                decimals=1,
            ),
            timeseries(
                "Template uses by kind",
                "Template uses per second, built-in and custom.",
                "ops",
                Q(sum_rate(TEMPLATES, ("kind",), **t), "{{kind}}"),
                stack=True,
            ),
        ],
    )


def professional_llm_performance_row() -> Row:
    tier = "professional"
    t = {"tier": tier}
    no_tier = " All tiers: this histogram carries no tier label (in practice only Professional calls cloud LLMs)."
    return Row(
        tier_title(tier, "cloud LLM performance"),
        [
            timeseries(
                "LLM latency p50 / p95 / p99",
                "Cloud LLM request latency, first byte sent to last token received." + no_tier,
                "s",
                *(Q(quantile(q, LLM_TIME), f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)),
                w=8,
            ),
            timeseries(
                "LLM latency p95 by provider and model",
                "95th percentile cloud LLM request latency per provider and model." + no_tier,
                "s",
                Q(quantile(0.95, LLM_TIME, PROVIDER_MODEL), "{{provider}} {{model}}"),
                w=8,
            ),
            timeseries(
                "LLM failure ratio by provider and model",
                "Failed cloud LLM requests divided by all requests, per provider and model.",
                "percentunit",
                Q(rate_ratio(LLM, {"outcome": "failure"}, PROVIDER_MODEL, **t), "{{provider}} {{model}}"),
                min_=0,
                w=8,
            ),
            timeseries(
                "Time to first token p50 / p95",
                "Latency to the first streamed token." + no_tier,
                "s",
                Q(quantile(0.5, LLM_TTFT), "p50"),
                Q(quantile(0.95, LLM_TTFT), "p95"),
                w=8,
            ),
            timeseries(
                "Time to first token p95 by provider and model",
                "95th percentile time to first token per provider and model." + no_tier,
                "s",
                Q(quantile(0.95, LLM_TTFT, PROVIDER_MODEL), "{{provider}} {{model}}"),
                w=8,
            ),
            heatmap(
                "LLM latency distribution",
                "Cloud LLM requests per latency bucket over time." + no_tier,
                "s",
                hist_buckets(LLM_TIME),
                w=8,
            ),
        ],
    )
