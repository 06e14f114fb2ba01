"""``POST /api/v1/feedback`` (durable before the 201) and ``GET /api/v1/feedback`` (JSON pages or CSV)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import sqlite3
from datetime import timezone
from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import ValidationError

from exporter.api.body import read_body
from exporter.api.errors import ApiError, invalid, iso
from exporter.api.models import FeedbackCreated, FeedbackIn, FeedbackQuery
from exporter.api.notify import summary
from exporter.instrument.recorder import URGENT_RATING
from exporter.store.database import FeedbackRecord, new_feedback_id

if TYPE_CHECKING:
    from exporter.api.app import IngestApi

log = logging.getLogger(__name__)

CSV_PAGE = 1000


async def post_feedback(api: IngestApi, request: web.Request) -> web.Response:
    caller = api.auth.caller(request)
    body = await read_body(request, api.config.max_body_bytes)
    try:
        feedback = FeedbackIn.model_validate_json(body)
    except ValidationError as exc:
        api.recorder.event("feedback", "rejected")
        raise invalid(exc) from None
    user_hash = api.recorder.hasher.digest(caller.user) if caller.user else None
    if user_hash is not None and api.activity.is_opted_out(user_hash):
        user_hash = None
    urgent = feedback.type == "bug" and feedback.rating <= URGENT_RATING
    record = FeedbackRecord(
        id=new_feedback_id(), created_at=api.clock(), tier=caller.tier, type=feedback.type,
        rating=feedback.rating, text=feedback.text, metadata=feedback.metadata, user_hash=user_hash,
        urgent=urgent,
    )
    deliveries = []
    if urgent and api.notifier.urls:
        payload = json.dumps(summary({**record.as_dict(), "created_at": iso(record.created_at)}))
        deliveries = [(url, payload) for url in api.notifier.urls]
    try:
        # Shielded: once started, the commit completes even if the client goes away.
        await asyncio.shield(api.store.add_feedback(record, deliveries))
    except sqlite3.Error as exc:
        log.error("feedback not stored", extra={"fields": {"error": str(exc)[:200]}})
        raise ApiError(503, "storage_unavailable", "body", "feedback could not be stored; retry later") from None
    api.recorder.feedback(caller.tier, feedback.type, feedback.rating)
    api.recorder.event("feedback", "accepted")
    if user_hash is not None:
        api.activity.add(user_hash, caller.tier, "feedback")
    if deliveries:
        api.notifier.wake()
    created = FeedbackCreated(id=record.id, created_at=iso(record.created_at), urgent=urgent)
    return web.json_response(created.model_dump(), status=201)

async def get_feedback(api: IngestApi, request: web.Request) -> web.StreamResponse:
    api.auth.admin(request)  # demo mode too: its admin token is the configured one, else the public demo token
    try:
        query = FeedbackQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise invalid(exc) from None
    since = None
    if query.since is not None:
        since_dt = query.since if query.since.tzinfo else query.since.replace(tzinfo=timezone.utc)
        since = since_dt.timestamp()
    filters = {"tier": query.tier, "type": query.type, "since": since}
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
    await response.prepare(request)
    columns = ("id", "created_at", "tier", "type", "rating", "urgent", "text", "metadata", "user_hash")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    while True:
        rows, cursor = await api.store.list_feedback(**filters, limit=CSV_PAGE, before_seq=cursor)
        for row in rows:
            writer.writerow([
                row["id"], iso(row["created_at"]), row["tier"], row["type"], row["rating"],
                "true" if row["urgent"] else "false", csv_safe(row["text"]),
                json.dumps(row["metadata"]) if row["metadata"] is not None else "", row["user_hash"] or "",
            ])
        await response.write(buffer.getvalue().encode())
        buffer.seek(0)
        buffer.truncate()
        if cursor is None:
            break
    await response.write_eof()
    return response

def csv_safe(text: str) -> str:
    """Neutralise spreadsheet formulas in exported free text (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text

