"""Tier-specific rows, appended to the tier's dashboards.

| tier | dashboard | rows |
|---|---|---|
| lite | usage | basic document metrics; upgrade potential |
| lite | license | API usage against limits |
| standard | usage | advanced feature adoption; upgrade potential |
| standard | performance | local model usage and performance |
| professional | usage | cloud LLM usage; custom templates; enterprise feature adoption |
| professional | performance | cloud LLM performance |

One module per tier holds the rows (and families) only that tier uses;
``common`` holds the shared families, the feature and model groups and the
rows several tiers share.
The table above is :data:`_EXTRA`, kept here so the whole mapping reads in
one place.
"""

from __future__ import annotations

from ..layout import Row
from .common import (
    ADVANCED_FEATURES,
    ENTERPRISE_FEATURES,
    feature_adoption_row,
    upgrade_potential_row,
)
from .lite import lite_api_limits_row, lite_basic_documents_row
from .professional import (
    professional_llm_performance_row,
    professional_llm_usage_row,
    professional_templates_row,
)
from .standard import standard_local_models_row

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
