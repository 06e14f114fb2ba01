"""Feedback analysis rows of each tier's Feedback dashboard: sentiment trend, feedback by feature, pain points.

From metrics only (Grafana reads Prometheus): ``clary_feedback_sentiment``
(VADER compound score by tier and type; its ``le="-0.05"`` bucket is
exactly the negative texts) and the per-feature counters. Sentiment is
summarised by its median, not its mean: scores are negative as often as
not, so the histogram's ``_sum`` goes down as well as up, and ``rate()``
would read every decrease as a counter reset. The pain-point
score is the one ``GET /api/v1/feedback/insights`` ranks by (bugs + ratings
of 2 or lower + negative texts, ``exporter.store.insights``), so the table
and the API agree; the API adds the sample texts.
"""

from __future__ import annotations

from exporter.promql import agg, div, increase_range, m, paren, rate, sum_total

from .layout import Row
from .panels import bargauge, stat, table, timeseries
from .styling import steps
from .targets import Q, instant, table_q

SENTIMENT = m("clary_feedback_sentiment")
BY_FEATURE = m("clary_feedback_feature_submissions_total")
LOW = m("clary_feedback_feature_low_ratings_total")
NEGATIVE = m("clary_feedback_feature_negative_total")
NEGATIVE_LE = "-0.05"  # VADER's cut-off, a bucket bound of the histogram
SENTIMENT_STEPS = [{"color": "red", "value": None}, {"color": "orange", "value": -0.05},
                   {"color": "green", "value": 0.05}]


def negative_share(tier: str, by: tuple[str, ...] = (), over_range: bool = False) -> str:
    """Share of feedback texts whose sentiment is negative (compound <= -0.05)."""
    window = increase_range if over_range else rate
    by = SENTIMENT.grouping(by, "bucket")
    return div(agg(window(SENTIMENT.bucket(tier=tier, le=NEGATIVE_LE)), by),
               agg(window(SENTIMENT.count(tier=tier)), by))


def median(tier: str, by: tuple[str, ...] = (), over_range: bool = False) -> str:
    """Median sentiment from the buckets (interpolated within 0.25-wide buckets); absent without texts.

    Not :func:`exporter.promql.quantile`: its ``>= 0`` guard would drop every negative median.
    """
    window = increase_range if over_range else rate
    by = SENTIMENT.grouping(by, "bucket")
    buckets = agg(window(SENTIMENT.bucket(tier=tier)), ("le", *by))
    return f"histogram_quantile(0.5, {buckets}) and {agg(window(SENTIMENT.count(tier=tier)), by)} > 0"


def pain_score(tier: str) -> str:
    """bugs + low ratings + negative texts per feature over the range (the insights endpoint's score)."""
    parts = (sum_total(BY_FEATURE, ("feature",), tier=tier, type="bug"), sum_total(LOW, ("feature",), tier=tier),
             sum_total(NEGATIVE, ("feature",), tier=tier))
    return " + ".join(paren(part) for part in parts)


def sentiment_row(tier: str) -> Row:
    return Row(
        "Sentiment",
        [
            stat("Negative texts", "Share of feedback texts with negative sentiment (VADER compound <= -0.05) in the "
                 "selected time range.", "percentunit", instant(negative_share(tier, over_range=True)),
                 thresholds=steps(("orange", 0.2), ("red", 0.4)), graph=False, w=4),
            stat("Median sentiment", "Median VADER compound score (-1 negative .. 1 positive) of feedback texts "
                 "in the selected time range, from the histogram's buckets.", "short",
                 instant(median(tier, over_range=True)),
                 thresholds=SENTIMENT_STEPS, decimals=2, graph=False, w=4),
            timeseries("Negative share of texts", "Share of feedback texts with negative sentiment over time, "
                       "overall and per feedback type.", "percentunit",
                       Q(negative_share(tier), "all"), Q(negative_share(tier, ("type",)), "{{type}}"),
                       min_=0, max_=1, w=8),
            timeseries("Median sentiment over time", "Median VADER compound score of feedback texts (from the "
                       "histogram's buckets), overall and per feedback type.", "short", Q(median(tier), "all"),
                       Q(median(tier, ("type",)), "{{type}}"), min_=-1, max_=1, w=8),
        ],
    )


def features_row(tier: str) -> Row:
    t = {"tier": tier}
    return Row(
        "Features",
        [
            bargauge("Feedback by feature", "Feedback naming each feature in the selected time range (`other`: a "
                     "name outside the feature allow-list).", "short",
                     instant(f"sort_desc({sum_total(BY_FEATURE, ('feature',), **t)})", "{{feature}}")),
            bargauge("Low-rating share by feature", "Share of each feature's feedback rated 2 or lower in the "
                     "selected time range.", "percentunit",
                     instant(div(sum_total(LOW, ("feature",), **t), sum_total(BY_FEATURE, ("feature",), **t)),
                             "{{feature}}"), max_=1, thresholds=steps(("orange", 0.2), ("red", 0.4))),
            bargauge("Feature requests by feature", "Feature requests naming each feature in the selected time "
                     "range: the improvement suggestions (texts: GET /api/v1/feedback/insights).", "short",
                     instant(f"sort_desc({sum_total(BY_FEATURE, ('feature',), type='feature_request', **t)})",
                             "{{feature}}")),
            table("Pain points", "Features ranked by score = bug reports + ratings of 2 or lower + negative texts in "
                  "the selected time range (one feedback can count three times). Texts: "
                  "GET /api/v1/feedback/insights.", "short",
                  table_q(pain_score(tier)), table_q(sum_total(BY_FEATURE, ("feature",), tier=tier, type="bug")),
                  table_q(sum_total(LOW, ("feature",), **t)), table_q(sum_total(NEGATIVE, ("feature",), **t)),
                  columns=("Score", "Bugs", "Low ratings", "Negative texts"), sort_by="Score", descending=True,
                  w=24),
        ],
    )


def rows(tier: str) -> list[Row]:
    return [sentiment_row(tier), features_row(tier)]
