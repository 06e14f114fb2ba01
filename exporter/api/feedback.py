"""``POST /api/v1/feedback`` (durable before the 201) and ``GET /api/v1/feedback`` (JSON pages or CSV)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import math
import re
import sqlite3
import unicodedata
from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import ValidationError

from exporter.api.body import read_body
from exporter.api.errors import ApiError, epoch, invalid, iso, storage_unavailable
from exporter.api.models import FeedbackCreated, FeedbackIn, FeedbackQuery
from exporter.api.notify import summary
from exporter.catalog import FEATURE
from exporter.instrument import sentiment
from exporter.instrument.recorder import URGENT_RATING
from exporter.store.database import FeedbackRecord, new_feedback_id

if TYPE_CHECKING:
    from exporter.api.app import IngestApi

log = logging.getLogger(__name__)

CSV_PAGE = 1000


async def post_feedback(api: IngestApi, request: web.Request) -> web.Response:
    caller = api.auth.caller(request)
    _rate_limit(api, request, caller.tier)
    body = await read_body(request, api.config.max_body_bytes, api.config.max_compression_ratio)
    try:
        feedback = FeedbackIn.model_validate_json(body)
    except ValidationError as exc:
        api.recorder.event("feedback", "rejected")
        raise invalid(exc) from None
    user_hash = api.activity.digest(caller.user) if caller.user else None  # opted out under any secret
    if user_hash is not None and api.activity.is_opted_out(user_hash):
        user_hash = None
    urgent = feedback.type == "bug" and feedback.rating <= URGENT_RATING
    # The feature allow-list of the metric labels (config allow_lists.feature); any other name is "other".
    feature = api.recorder.metrics.guard.value(FEATURE, feedback.feature) if feedback.feature else None
    record = FeedbackRecord(
        id=new_feedback_id(), created_at=api.clock(), tier=caller.tier, type=feedback.type,
        rating=feedback.rating, text=feedback.text, metadata=feedback.metadata, user_hash=user_hash,
        urgent=urgent, feature=feature, sentiment=await sentiment.score_async(feedback.text),
    )
    deliveries, ticket = [], None
    if urgent and api.notifier.urls:
        ticket = api.limits.urgent.admit(caller.tier, feedback.text)
        if ticket.send:
            payload = json.dumps(summary({**record.as_dict(), "created_at": iso(record.created_at)},
                                         ticket.suppressed_before))
            deliveries = [(url, payload) for url in api.notifier.urls]
    try:
        # Shielded: once started, the commit completes even if the client goes away.
        await asyncio.shield(api.store.add_feedback(record, deliveries))
    except sqlite3.Error as exc:
        if ticket is not None:
            api.limits.urgent.release(ticket)
        log.error("feedback not stored", extra={"fields": {"error": str(exc)[:200]}})
        raise storage_unavailable("feedback could not be stored") from None
    api.recorder.feedback(caller.tier, feedback.type, feedback.rating, feature=feature, sentiment=record.sentiment)
    api.recorder.event("feedback", "accepted")
    if user_hash is not None:
        api.activity.add(user_hash, caller.tier, "feedback")
    if deliveries:
        api.notifier.wake()
    elif ticket is not None:
        api.recorder.count_each("clary_feedback_notifications_suppressed_total", [(caller.tier, ticket.reason)])
    created = FeedbackCreated(id=record.id, created_at=iso(record.created_at), urgent=urgent)
    return web.json_response(created.model_dump(), status=201)


def _rate_limit(api: IngestApi, request: web.Request, tier: str) -> None:
    """429 with Retry-After once the caller's API key is past its token bucket (``exporter.api.limits``)."""
    wait = api.limits.keys.take(request.headers["X-API-Key"])  # a configured key: caller() accepted it
    if wait:
        seconds = max(1, math.ceil(wait))
        api.recorder.count_each("clary_feedback_rate_limited_total", [(tier,)])
        raise ApiError(429, "rate_limited", "X-API-Key",
                       f"too many feedback submissions with this API key; retry in {seconds} s",
                       {"Retry-After": str(seconds)})

async def get_feedback(api: IngestApi, request: web.Request) -> web.StreamResponse:
    api.auth.admin(request)  # demo mode too: its admin token is the configured one, else the public demo token
    try:
        query = FeedbackQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise invalid(exc) from None
    since = epoch(query.since) if query.since is not None else None
    filters = {"tier": query.tier, "type": query.type, "since": since, "feature": query.feature}
    if query.format == "csv":
        return await _csv(api, request, filters, query.cursor)
    rows, cursor = await api.store.list_feedback(**filters, limit=query.limit, before_seq=query.cursor)
    page = {"items": [{**row, "created_at": iso(row["created_at"])} for row in rows],
            "next_cursor": str(cursor) if cursor is not None else None}
    return web.json_response(page)

async def _csv(api: IngestApi, request: web.Request, filters: dict, cursor: int | None) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": 'attachment; filename="clary-feedback.csv"',
    })
    columns = ("id", "created_at", "tier", "type", "rating", "urgent", "text", "metadata", "user_hash", "feature",
               "sentiment", "sentiment_label")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    while True:
        rows, cursor = await api.store.list_feedback(**filters, limit=CSV_PAGE, before_seq=cursor)
        for row in rows:
            writer.writerow([csv_safe(str(cell)) for cell in (
                row["id"], iso(row["created_at"]), row["tier"], row["type"], row["rating"],
                "true" if row["urgent"] else "false", row["text"],
                json.dumps(row["metadata"]) if row["metadata"] is not None else "", row["user_hash"] or "",
                row["feature"] or "",
            )] + sentiment_cells(row["sentiment"]))
        if not response.prepared:  # after the first page: a store that is down is a 503, not a broken stream
            await response.prepare(request)
        await response.write(buffer.getvalue().encode())
        buffer.seek(0)
        buffer.truncate()
        if cursor is None:
            break
    await response.write_eof()
    return response


def sentiment_cells(compound: float | None) -> list[str]:
    """The score and its label as CSV cells: computed numbers, so not passed through csv_safe (a
    negative score would get a quote)."""
    return ["", ""] if compound is None else [repr(compound), sentiment.label(compound)]


# A spreadsheet may run a cell as a formula when one of these comes first, also after leading
# blanks or line breaks, and some read compatibility forms such as fullwidth "＝" as "=".
FORMULA_STARTS = ("=", "+", "-", "@")
_CONTROL_STARTS = ("\t", "\r")
_BLANKS = re.compile(r"[\s\u200b\u200c\u200d\u2060\ufeff]*")


def csv_safe(text: str) -> str:
    """Neutralise spreadsheet formulas in an exported cell (CSV injection), as OWASP suggests.

    A cell that starts with tab or CR, or whose first character other than
    whitespace (and zero-width characters), after Unicode NFKC
    normalisation, is ``=``, ``+``, ``-`` or ``@`` gets a leading ``'``: the
    spreadsheet shows it as text, and the original is the cell without its
    first character.
    """
    if text[:1] in _CONTROL_STARTS:
        return "'" + text
    normal = unicodedata.normalize("NFKC", text)
    first = normal[_BLANKS.match(normal).end():][:1]
    return "'" + text if first in FORMULA_STARTS else text

