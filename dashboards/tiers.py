"""Tier-specific rows, appended to the tier's dashboards.

| tier | dashboard | rows |
|---|---|---|
| lite | usage | basic document metrics; upgrade potential |
| lite | license | API usage against limits |
| standard | usage | advanced feature adoption; upgrade potential |
| standard | performance | local model usage and performance |
| professional | usage | cloud LLM usage; custom templates; enterprise feature adoption |
| professional | performance | cloud LLM performance |

Feature and model groups below are taken from the catalog's default
allow-lists (``sel`` rejects a value that is not in them). Which features a
tier *sells* is product configuration the catalog does not carry; the
grouping here is the dashboards' reading of the product card and lives in
one place so it is easy to change.
"""

from __future__ import annotations

from exporter.promql import (
    agg,
    compliance,
    div,
    hist_buckets,
    hist_mean_range,
    label_values,
    m,
    one_of,
    quantile,
    rate_ratio,
    sum_gauge,
    sum_rate,
    sum_total,
    total_ratio,
)

from .panels import (
    Q,
    Row,
    bargauge,
    gauge,
    heatmap,
    instant,
    stat,
    steps,
    table,
    table_q,
    timeseries,
)

DOCS = m("clary_documents_processed_total")
DOC_TIME = m("clary_document_processing_duration_seconds")
FEATURES = m("clary_feature_uses_total")
BLOCKED = m("clary_feature_blocked_total")
QUOTA = m("clary_quota_exceeded_total")
TEMPLATES = m("clary_template_uses_total")
HTTP = m("clary_http_requests_total")
INFERENCE = m("clary_inference_requests_total")
INFERENCE_TIME = m("clary_inference_duration_seconds")
MODEL_LOAD = m("clary_model_load_duration_seconds")
MODEL_MEMORY = m("clary_model_memory_bytes")
LLM = m("clary_llm_requests_total")
LLM_TIME = m("clary_llm_request_duration_seconds")
LLM_TTFT = m("clary_llm_time_to_first_token_seconds")
LLM_TOKENS = m("clary_llm_tokens_total")

BASIC_FEATURES = ("ocr", "table_extraction", "classification")
ADVANCED_FEATURES = (
    "entity_extraction",
    "summarization",
    "translation",
    "redaction",
    "handwriting",
    "signature_detection",
    "batch_processing",
)
ENTERPRISE_FEATURES = ("custom_templates", "llm_extraction", "sso", "audit_log")
CLOUD_MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet", "claude-haiku", "gemini-pro")
LOCAL_MODELS = tuple(v for v in label_values("clary_inference_requests_total", "model") if v not in CLOUD_MODELS)

_KNOWN_FEATURES = set(label_values("clary_feature_uses_total", "feature"))
_KNOWN_MODELS = set(label_values("clary_inference_requests_total", "model"))
for _group in (BASIC_FEATURES, ADVANCED_FEATURES, ENTERPRISE_FEATURES):
    if not set(_group) <= _KNOWN_FEATURES:
        raise ValueError(f"features not in the catalog: {sorted(set(_group) - _KNOWN_FEATURES)}")
if not set(CLOUD_MODELS) <= _KNOWN_MODELS:
    raise ValueError(f"models not in the catalog: {sorted(set(CLOUD_MODELS) - _KNOWN_MODELS)}")

PROVIDER_MODEL = ("provider", "model")


def _prefix(tier: str, title: str) -> str:
    return f"{tier.capitalize()}: {title}"


# --- rows shared by several tiers ------------------------------------------------

def upgrade_potential_row(tier: str) -> Row:
    """Demand this tier cannot serve: blocked features and quota hits."""
    t = {"tier": tier}
    return Row(
        _prefix(tier, "upgrade potential"),
        [
            stat(
                "Blocked feature requests",
                "Requests for a feature this tier does not include, in the selected time range "
                "(each one is a reason to upgrade).",
                "short",
                instant(sum_total(BLOCKED, **t)),
                graph=False,
            ),
            stat(
                "Blocked share of feature requests",
                "Blocked feature requests divided by all feature requests (blocked + used) in the "
                "selected time range.",
                "percentunit",
                instant(div(
                    sum_total(BLOCKED, **t),
                    f"{sum_total(BLOCKED, **t)} + {sum_total(FEATURES, **t)}",
                )),
                graph=False,
                decimals=1,
            ),
            stat(
                "Quota hits",
                "Requests refused because a tier quota was exhausted, in the selected time range.",
                "short",
                instant(sum_total(QUOTA, **t)),
                graph=False,
            ),
            stat(
                "Customers at a limit",
                "Licenses of this tier using 90% or more of any limit right now.",
                "short",
                Q(f"count({agg(compliance(**t), ('license',), op='max')} >= 0.9) or vector(0)"),
            ),
            timeseries(
                "Blocked feature requests by feature",
                "Requests per second for features outside this tier, by feature.",
                "ops",
                Q(sum_rate(BLOCKED, ("feature",), **t), "{{feature}}"),
                w=8,
            ),
            bargauge(
                "Most requested blocked features",
                "The ten features this tier's customers asked for most without having them, in "
                "the selected time range.",
                "short",
                instant(f"topk(10, {sum_total(BLOCKED, ('feature',), **t)})", "{{feature}}"),
                w=8,
            ),
            timeseries(
                "Quota hits by limit",
                "Requests refused per second because a quota (documents, features, api_calls) "
                "was exhausted.",
                "ops",
                Q(sum_rate(QUOTA, ("limit",), **t), "{{limit}}"),
                w=8,
            ),
        ],
    )


def feature_adoption_row(tier: str, title: str, features: tuple[str, ...]) -> Row:
    """How much of a feature group the tier's customers actually use."""
    t = {"tier": tier}
    group = {"feature": one_of(features)}
    names = ", ".join(features)
    return Row(
        _prefix(tier, title),
        [
            stat(
                "Features in use",
                f"How many of the {len(features)} features ({names}) were used at least once in "
                "the selected time range.",
                "short",
                instant(f"count({sum_total(FEATURES, ('feature',), **t, **group)} > 0) or vector(0)"),
                graph=False,
            ),
            stat(
                "Share of feature uses",
                f"Uses of {names} divided by all feature uses in the selected time range.",
                "percentunit",
                instant(total_ratio(FEATURES, group, **t)),
                graph=False,
                decimals=1,
            ),
            bargauge(
                "Uses per feature",
                f"Uses of each of {names} in the selected time range.",
                "short",
                instant(sum_total(FEATURES, ("feature",), **t, **group), "{{feature}}"),
                w=12,
            ),
            timeseries(
                "Uses by feature",
                f"Uses per second of {names}, stacked.",
                "ops",
                Q(sum_rate(FEATURES, ("feature",), **t, **group), "{{feature}}"),
                stack=True,
                w=12,
            ),
            timeseries(
                "Failure ratio by feature",
                f"Failed uses divided by all uses, per feature ({names}).",
                "percentunit",
                Q(rate_ratio(FEATURES, {"outcome": "failure"}, ("feature",), **t, **group), "{{feature}}"),
                min_=0,
                w=12,
            ),
        ],
    )


# --- Lite -------------------------------------------------------------------------

def lite_basic_documents_row() -> Row:
    tier = "lite"
    t = {"tier": tier}
    basic = {"feature": one_of(BASIC_FEATURES)}
    return Row(
        _prefix(tier, "basic document metrics"),
        [
            table(
                "Documents by type and outcome",
                "Documents processed in the selected time range, per document type and outcome.",
                "short",
                table_q(sum_total(DOCS, ("doc_type", "outcome"), **t)),
                value_column="Documents",
                sort_by="Documents",
                descending=True,
                w=8,
            ),
            bargauge(
                "Mean processing time by type",
                "Mean wall time to process one document of each type in the selected time range.",
                "s",
                instant(hist_mean_range(DOC_TIME, ("doc_type",), **t), "{{doc_type}}"),
                w=8,
            ),
            timeseries(
                "Basic features by outcome",
                f"Uses per second of the basic features ({', '.join(BASIC_FEATURES)}), by outcome.",
                "ops",
                Q(sum_rate(FEATURES, ("feature", "outcome"), **t, **basic), "{{feature}} {{outcome}}"),
                w=8,
            ),
        ],
    )


def lite_api_limits_row() -> Row:
    tier = "lite"
    t = {"tier": tier}
    api = {"limit": "api_calls"}
    return Row(
        _prefix(tier, "API usage against limits"),
        [
            gauge(
                "API-call allowance used (highest)",
                "The highest api_calls usage / limit ratio over all Lite licenses.",
                "percentunit",
                Q(agg(compliance(**t, **api), op="max")),
                max_=1.2,
                thresholds=steps(("orange", 0.8), ("red", 1)),
            ),
            bargauge(
                "API-call allowance by license",
                "The ten Lite licenses closest to (or over) their api_calls limit.",
                "percentunit",
                instant(f"topk(10, {compliance(**t, **api)})", "{{license}}"),
                max_=1.2,
                thresholds=steps(("orange", 0.8), ("red", 1)),
                w=6,
            ),
            table(
                "API calls used and allowed per license",
                "Current api_calls usage and limit of every Lite license.",
                "short",
                table_q(agg(m("clary_license_usage").sel(**t, **api), ("license",), op="max")),
                table_q(agg(m("clary_license_limit").sel(**t, **api), ("license",), op="max")),
                columns=("Used", "Limit"),
                sort_by="Used",
                descending=True,
                w=12,
            ),
            timeseries(
                "API calls served vs refused by quota",
                "Lite API requests served per second and requests refused because the api_calls "
                "quota was exhausted.",
                "reqps",
                Q(sum_rate(HTTP, **t), "served"),
                Q(sum_rate(QUOTA, **t, **api), "refused (api_calls quota)"),
                w=24,
            ),
        ],
    )


# --- Standard ---------------------------------------------------------------------

def standard_local_models_row() -> Row:
    tier = "standard"
    t = {"tier": tier}
    local = {"model": one_of(LOCAL_MODELS)}
    return Row(
        _prefix(tier, "local model usage and performance"),
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
                thresholds=steps(("orange", 0.01), ("red", 0.05)),
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
                "Local model load time p95",
                "95th percentile time to load each local model. All tiers: no tier label.",
                "s",
                Q(quantile(0.95, MODEL_LOAD, ("model",), **local), "{{model}}"),
                w=8,
            ),
        ],
    )


# --- Professional -----------------------------------------------------------------

def professional_llm_usage_row() -> Row:
    tier = "professional"
    t = {"tier": tier}
    return Row(
        _prefix(tier, "cloud LLM usage"),
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
                thresholds=steps(("orange", 0.01), ("red", 0.05)),
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
        _prefix(tier, "custom templates"),
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
        _prefix(tier, "cloud LLM performance"),
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


_EXTRA = {
    ("lite", "usage"): lambda: [lite_basic_documents_row(), upgrade_potential_row("lite")],
    ("lite", "license"): lambda: [lite_api_limits_row()],
    ("standard", "usage"): lambda: [
        feature_adoption_row("standard", "advanced feature adoption", ADVANCED_FEATURES),
        upgrade_potential_row("standard"),
    ],
    ("standard", "performance"): lambda: [standard_local_models_row()],
    ("professional", "usage"): lambda: [
        professional_llm_usage_row(),
        professional_templates_row(),
        feature_adoption_row("professional", "enterprise feature adoption", ENTERPRISE_FEATURES),
    ],
    ("professional", "performance"): lambda: [professional_llm_performance_row()],
}


def extra_rows(tier: str, kind: str) -> list[Row]:
    """The tier-specific rows of one tier's dashboard of one kind."""
    make = _EXTRA.get((tier, kind))
    return make() if make else []
