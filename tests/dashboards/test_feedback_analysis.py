"""The feedback-analysis rows on each tier's Feedback dashboard (dashboards.feedback_analysis)."""

from __future__ import annotations

import pytest

from dashboards import feedback
from dashboards.queries import all_queries
from exporter.catalog import TIERS

PANELS = {"Negative texts", "Median sentiment", "Negative share of texts", "Median sentiment over time",
          "Feedback by feature", "Low-rating share by feature", "Feature requests by feature", "Pain points"}


@pytest.mark.parametrize("tier", TIERS)
def test_every_tier_has_the_sentiment_and_feature_panels(tier):
    titles = {panel.title for row in feedback.rows(tier) for panel in row.panels}
    assert PANELS <= titles
    queries = {title: expr for uid, title, expr in all_queries() if uid == f"clary-{tier}-feedback"}
    assert PANELS <= set(queries)  # so the e2e tests run them against Prometheus
    for title in PANELS:
        assert f'tier="{tier}"' in queries[title]


def test_the_negative_share_reads_vaders_cut_off_bucket_and_the_median_keeps_negative_values():
    queries = {title: expr for uid, title, expr in all_queries() if uid == "clary-lite-feedback"}
    assert 'le="-0.05"' in queries["Negative texts"]
    assert queries["Median sentiment"].startswith("histogram_quantile(0.5, sum by (le)")
    assert ">= 0" not in queries["Median sentiment"]  # a negative median is a result, not a NaN to hide


def test_the_pain_point_score_adds_bugs_low_ratings_and_negative_texts():
    (pain,) = [panel for row in feedback.rows("standard") for panel in row.panels if panel.title == "Pain points"]
    score, bugs, low, negative = (target.expr for target in pain.targets)
    assert score == f"{bugs} + {low} + {negative}"
    assert 'type="bug"' in bugs and "low_ratings" in low and "negative" in negative
