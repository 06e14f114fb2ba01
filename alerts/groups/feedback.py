"""clary-feedback: urgent bug reports go to support and development, not to the pager."""

from __future__ import annotations

from typing import Any

from exporter.promql import m

from ..config import Config
from .common import RuleGroup, sum_increase_over

URGENT = m("clary_feedback_urgent_total")


def feedback_group(cfg: Config) -> dict[str, Any]:
    g = RuleGroup("clary-feedback", cfg)
    g.alert(
        "ClaryUrgentBugReport",
        f"{sum_increase_over(URGENT, '15m', ('tier',))} > 0",
        severity="warning",
        team="support",
        summary="Urgent bug report from tier {{ $labels.tier }}.",
        description=(
            "{{ $value | printf \"%.0f\" }} bug report(s) rated 2 or lower arrived from tier {{ $labels.tier }} "
            "in the last 15 minutes. Read them in the feedback store and answer the customer."
        ),
    )
    return g.build()
