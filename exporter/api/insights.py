"""``GET /api/v1/feedback/insights``: pain points and improvement suggestions over a window (admin).

The rankings and their score are defined in ``exporter.store.insights``;
this module parses the query, asks the store thread for the per-feature
counts and answers JSON (:class:`exporter.api.models.FeedbackInsights`) or
CSV (one row per ranked entry, ``kind`` = ``pain_point`` or ``suggestion``).
Sample texts are feedback texts, which admins already read through
``GET /api/v1/feedback``; in CSV they pass :func:`csv_safe` like there.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import ValidationError

from exporter.api.errors import ApiError, epoch, invalid, iso
from exporter.api.feedback import csv_safe
from exporter.api.models import FeedbackInsights, InsightsQuery, PainPoint, Suggestion
from exporter.store import insights
from exporter.store.insights import SAMPLES, FeatureStats

if TYPE_CHECKING:
    from exporter.api.app import IngestApi

DEFAULT_WINDOW_DAYS = 30
CSV_COLUMNS = ("kind", "rank", "feature", "score", "bugs", "low_ratings", "negative", "feature_requests", "feedback",
               "average_sentiment", *(f"sample_{n}" for n in range(1, SAMPLES + 1)))


async def get_insights(api: IngestApi, request: web.Request) -> web.Response:
    api.auth.admin(request)
    try:
        query = InsightsQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise invalid(exc) from None
    until = epoch(query.until) if query.until is not None else api.clock()
    since = epoch(query.since) if query.since is not None else until - DEFAULT_WINDOW_DAYS * 86400
    if since >= until:
        raise ApiError(400, "invalid_field", "since", "must be before until")
    stats = await api.store.feedback_insights(since, until, query.tier)
    pains, wanted = insights.pain_points(stats, query.limit), insights.suggestions(stats, query.limit)
    if query.format == "csv":
        return _csv(pains, wanted)
    report = FeedbackInsights(
        since=iso(since), until=iso(until), tier=query.tier, feedback=sum(s.feedback for s in stats),
        unattributed=sum(s.feedback for s in stats if s.feature is None),
        pain_points=[PainPoint(feature=s.feature, score=s.score, bugs=s.bugs, low_ratings=s.low_ratings,
                               negative=s.negative, feedback=s.feedback, average_sentiment=s.average_sentiment,
                               samples=s.pain_samples) for s in pains],
        suggestions=[Suggestion(feature=s.feature, count=s.feature_requests, feedback=s.feedback,
                                average_sentiment=s.average_sentiment, samples=s.request_samples) for s in wanted],
    )
    return web.json_response(report.model_dump())


def _csv(pains: list[FeatureStats], wanted: list[FeatureStats]) -> web.Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for kind, ranked in (("pain_point", pains), ("suggestion", wanted)):
        for rank, s in enumerate(ranked, 1):
            samples = s.pain_samples if kind == "pain_point" else s.request_samples
            score = s.score if kind == "pain_point" else s.feature_requests
            numbers = [s.bugs, s.low_ratings, s.negative, s.feature_requests, s.feedback]
            average = "" if s.average_sentiment is None else repr(s.average_sentiment)
            writer.writerow([kind, rank, s.feature, score, *numbers, average,
                             *(csv_safe(text) for text in samples), *[""] * (SAMPLES - len(samples))])
    return web.Response(body=buffer.getvalue().encode(), headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": 'attachment; filename="clary-feedback-insights.csv"',
    })
