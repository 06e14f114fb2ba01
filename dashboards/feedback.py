"""Feedback dashboard (one per tier): submissions, ratings, urgent bug reports, sentiment and features
(``dashboards.feedback_analysis``)."""

from __future__ import annotations

from exporter.promql import (
    div,
    hist_buckets,
    hist_mean,
    hist_mean_range,
    m,
    not_equal,
    sum_rate,
    sum_total,
)

from . import feedback_analysis, tier_rows
from .common import Built, tier_dashboard
from .layout import Row
from .panels import bargauge, piechart, stat, timeseries
from .styling import steps
from .targets import Q, instant

KIND = "feedback"

SUBMISSIONS = m("clary_feedback_submissions_total")
RATING = m("clary_feedback_rating")
URGENT = m("clary_feedback_urgent_total")

# Ratings are 1..5; the +Inf bucket holds nothing of interest.
FINITE = {"le": not_equal("+Inf")}
RATING_STEPS = [
    {"color": "red", "value": None},
    {"color": "orange", "value": 3},
    {"color": "green", "value": 4},
]


def submissions_row(tier: str) -> Row:
    t = {"tier": tier}
    return Row(
        "Submissions",
        [
            stat(
                "Submissions",
                "Feedback submissions of every type in the selected time range.",
                "short",
                instant(sum_total(SUBMISSIONS, **t)),
                graph=False,
            ),
            stat(
                "Urgent bug reports",
                "Bug reports rated 2 or lower in the selected time range.",
                "short",
                instant(sum_total(URGENT, **t)),
                thresholds=steps(("red", 1)),
                graph=False,
            ),
            stat(
                "Average rating",
                "Mean rating (1..5) given with feedback in the selected time range.",
                "short",
                instant(hist_mean_range(RATING, **t)),
                thresholds=RATING_STEPS,
                decimals=2,
                graph=False,
            ),
            stat(
                "Bug share",
                "Share of submissions that are bug reports in the selected time range.",
                "percentunit",
                instant(
                    div(sum_total(SUBMISSIONS, tier=tier, type="bug"), sum_total(SUBMISSIONS, **t))
                ),
                graph=False,
            ),
            timeseries(
                "Submissions by type",
                "Feedback submissions per second, by type (stacked).",
                "ops",
                Q(sum_rate(SUBMISSIONS, ("type",), **t), "{{type}}"),
                stack=True,
                w=16,
            ),
            piechart(
                "Submissions by type",
                "Share of each feedback type in the selected time range.",
                "short",
                instant(sum_total(SUBMISSIONS, ("type",), **t), "{{type}}"),
            ),
        ],
    )


def ratings_row(tier: str) -> Row:
    t = {"tier": tier}
    return Row(
        "Ratings",
        [
            bargauge(
                "Rating distribution",
                "How many ratings of 1, 2, 3, 4 and 5 were given in the selected time range.",
                "short",
                instant(hist_buckets(RATING, over_range=True, **t, **FINITE), "{{le}}", fmt="heatmap"),
                orientation="vertical",
            ),
            timeseries(
                "Average rating",
                "Mean rating (1..5) over time, overall and per feedback type.",
                "short",
                Q(hist_mean(RATING, **t), "all"),
                Q(hist_mean(RATING, ("type",), **t), "{{type}}"),
                min_=1,
                max_=5,
                w=8,
            ),
            bargauge(
                "Average rating by type",
                "Mean rating per feedback type in the selected time range.",
                "short",
                instant(hist_mean_range(RATING, ("type",), **t), "{{type}}"),
                min_=1,
                max_=5,
                thresholds=RATING_STEPS,
                decimals=2,
            ),
        ],
    )


def urgent_row(tier: str) -> Row:
    t = {"tier": tier}
    return Row(
        "Urgent bug reports",
        [
            timeseries(
                "Urgent bug reports",
                "Bug reports rated 2 or lower, per second. Each one should reach on-call.",
                "ops",
                Q(sum_rate(URGENT, **t), "urgent"),
                bars=True,
                w=12,
            ),
            timeseries(
                "Urgent share of bug reports",
                "Urgent bug reports divided by all bug reports.",
                "percentunit",
                Q(
                    div(sum_rate(URGENT, **t), sum_rate(SUBMISSIONS, tier=tier, type="bug")),
                    "urgent / bugs",
                ),
                min_=0,
                w=12,
            ),
        ],
    )


def rows(tier: str) -> list[Row]:
    return [
        submissions_row(tier),
        ratings_row(tier),
        urgent_row(tier),
        *feedback_analysis.rows(tier),
        *tier_rows.extra_rows(tier, KIND),
    ]


# Tile -> the panel that explains it (dashboards.links.with_details).
DETAILS = {
    "Urgent bug reports": "Urgent bug reports",
    "Average rating": "Average rating",
    "Bug share": "Urgent share of bug reports",
}


def dashboard(tier: str) -> Built:
    return tier_dashboard(
        tier,
        KIND,
        f"Feedback from {tier} customers: submissions by type, rating distribution and "
        "average, urgent bug reports, sentiment, feedback by feature and pain points.",
        rows(tier),
        DETAILS,
    )
