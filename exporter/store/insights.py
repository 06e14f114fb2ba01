"""Feedback analysis over a time window: per-feature counts, pain points and improvement suggestions.

What a product manager asks of stored feedback, answered from the
``feedback`` table (``feature`` and ``sentiment`` since schema version 4):

- **pain points**: features ranked by ``score = bugs + low_ratings +
  negative``, where ``bugs`` counts bug reports, ``low_ratings`` feedback
  rated 2 or lower, ``negative`` texts whose sentiment is negative
  (compound <= -0.05). One feedback can count in all three (a bug report
  rated 1 that says "this is broken and useless" scores 3): the worse, the
  higher. Ties: more bugs first, then the feature's name.
- **improvement suggestions**: features ranked by the number of feature
  requests naming them; ties by name.

Feedback that names no feature is in neither ranking; it is counted as
``unattributed``. Each entry carries up to ``SAMPLES`` of its latest texts
(cut to ``SAMPLE_CHARS``): for a pain point, texts of its bugs, low ratings
and negative texts; for a suggestion, texts of its feature requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.instrument.recorder import LOW_RATING
from exporter.instrument.sentiment import NEGATIVE_AT

SAMPLES = 3
SAMPLE_CHARS = 280

_PAIN = f"(type = 'bug' OR rating <= {LOW_RATING} OR sentiment <= ?)"
_REQUEST = "type = 'feature_request'"


@dataclass
class FeatureStats:
    """One feature's feedback in the window (``feature`` None: feedback naming no feature)."""

    feature: str | None
    feedback: int = 0
    bugs: int = 0
    low_ratings: int = 0
    negative: int = 0
    feature_requests: int = 0
    average_sentiment: float | None = None
    pain_samples: list[str] = field(default_factory=list)
    request_samples: list[str] = field(default_factory=list)

    @property
    def score(self) -> int:
        return self.bugs + self.low_ratings + self.negative


def _window(since: float, until: float, tier: str | None) -> tuple[str, list]:
    where, args = "created_at >= ? AND created_at < ?", [since, until]
    if tier is not None:
        where += " AND tier = ?"
        args.append(tier)
    return where, args


def feature_stats(conn, since: float, until: float, tier: str | None = None) -> list[FeatureStats]:
    """Counts per feature (and for feedback naming none) in [since, until), with sample texts."""
    where, args = _window(since, until, tier)
    stats: dict[str | None, FeatureStats] = {}
    for feature, total, bugs, low, negative, requests, average in conn.execute(
        "SELECT feature, COUNT(*), SUM(CASE WHEN type = 'bug' THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN rating <= ? THEN 1 ELSE 0 END), SUM(CASE WHEN sentiment <= ? THEN 1 ELSE 0 END),"
        f" SUM(CASE WHEN {_REQUEST} THEN 1 ELSE 0 END), AVG(sentiment) FROM feedback WHERE {where} GROUP BY feature",
        (LOW_RATING, NEGATIVE_AT, *args),
    ):
        # int(): PostgreSQL's SUM of integers is a numeric (Decimal in Python).
        stats[feature] = FeatureStats(feature, int(total), int(bugs), int(low), int(negative), int(requests),
                                      None if average is None else round(float(average), 4))
    for attribute, condition, extra in (("pain_samples", _PAIN, [NEGATIVE_AT]), ("request_samples", _REQUEST, [])):
        for feature, text in conn.execute(
            "SELECT feature, text FROM (SELECT feature, text, ROW_NUMBER() OVER"
            f" (PARTITION BY feature ORDER BY seq DESC) AS n FROM feedback WHERE {where} AND text != ''"
            f" AND {condition}) AS ranked WHERE n <= ? ORDER BY feature, n",
            (*args, *extra, SAMPLES),
        ):
            sample = text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + "…"
            getattr(stats[feature], attribute).append(sample)
    return list(stats.values())


def pain_points(stats: list[FeatureStats], limit: int) -> list[FeatureStats]:
    """Named features with a score above 0, highest score first (then more bugs, then by name)."""
    named = [s for s in stats if s.feature is not None and s.score > 0]
    return sorted(named, key=lambda s: (-s.score, -s.bugs, s.feature))[:limit]


def suggestions(stats: list[FeatureStats], limit: int) -> list[FeatureStats]:
    """Named features with feature requests, most requested first (then by name)."""
    named = [s for s in stats if s.feature is not None and s.feature_requests > 0]
    return sorted(named, key=lambda s: (-s.feature_requests, s.feature))[:limit]
