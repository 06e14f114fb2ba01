"""clary-feedback: urgent bug reports and a drop in ratings go to support and development, not to the pager."""

from __future__ import annotations

from typing import Any

from exporter.promql import agg, increase, m, on

from ..config import Config, num
from .common import RuleGroup, ratio, sum_increase_over

URGENT = m("clary_feedback_urgent_total")
RATING = m("clary_feedback_rating")

# The recent window compared with the week before it.
RECENT = "6h"
BASELINE = "7d"


def mean_rating(window: str, offset: str = "") -> str:
    """Mean rating per tier over ``window`` (ending ``offset`` ago): increase(_sum) / increase(_count)."""
    shift = f" offset {offset}" if offset else ""
    by = RATING.grouping(("tier",), "sum")
    return ratio(agg(f"increase({RATING.sum()}[{window}]{shift})", by), agg(f"increase({RATING.count()}[{window}]{shift})", by))


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
    ratings = g.record(f"tier:clary_feedback_ratings:increase{RECENT}", agg(increase(RATING.count(), RECENT), RATING.grouping(("tier",), "count")))
    mean = g.record(f"tier:clary_feedback_rating:mean{RECENT}", mean_rating(RECENT))
    baseline = g.record(f"tier:clary_feedback_rating:mean{BASELINE}_offset{RECENT}", mean_rating(BASELINE, RECENT))
    g.alert(
        "ClaryFeedbackRatingDrop",
        f"""
        {g.series(mean)}
        < {on("tier")}
        {g.series(baseline)} - {num(cfg.feedback_rating_drop)}
        and {on("tier")}
        {g.series(ratings)} >= {cfg.feedback_min_ratings}
        """,
        severity="warning",
        team="support",
        for_="30m",
        summary="Feedback ratings of tier {{ $labels.tier }} dropped.",
        description=(
            f"The mean feedback rating of tier {{{{ $labels.tier }}}} over the last {RECENT} is "
            "{{ $value | printf \"%.2f\" }}, more than "
            f"{num(cfg.feedback_rating_drop)} below its mean over the {BASELINE} before (at least "
            f"{cfg.feedback_min_ratings} ratings): something customers notice got worse. Read the recent feedback."
        ),
    )
    return g.build()
