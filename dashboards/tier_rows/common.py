"""Metric families, feature and model groups, and the rows several tiers share.

Feature and model groups below are taken from the catalog's default
allow-lists (``sel`` rejects a value that is not in them). Which features a
tier *sells* is product configuration the catalog does not carry; the
grouping here is the dashboards' reading of the product card and lives in
one place so it is easy to change. Families used by one tier only are
defined in that tier's module.
"""

from __future__ import annotations

from exporter.promql import (
    agg,
    compliance,
    div,
    label_values,
    m,
    one_of,
    rate_ratio,
    sum_rate,
    sum_total,
    total_ratio,
)

from ..layout import Row
from ..panels import bargauge, stat, timeseries
from ..targets import Q, instant

DOCS = m("clary_documents_processed_total")
FEATURES = m("clary_feature_uses_total")
BLOCKED = m("clary_feature_blocked_total")
QUOTA = m("clary_quota_exceeded_total")

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


def tier_title(tier: str, title: str) -> str:
    """A tier row's title: ``Lite: upgrade potential``."""
    return f"{tier.capitalize()}: {title}"


# --- rows shared by several tiers ------------------------------------------------

def upgrade_potential_row(tier: str) -> Row:
    """Demand this tier cannot serve: blocked features and quota hits."""
    t = {"tier": tier}
    return Row(
        tier_title(tier, "upgrade potential"),
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
                "Licenses of this tier using 90% or more of any limit right now (limits of 0 are "
                "left out: no ratio).",
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
        tier_title(tier, title),
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
