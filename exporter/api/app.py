"""The ingestion, feedback and privacy HTTP API under ``/api/v1/``.

``setup_api(app, config, recorder)`` mounts everything on the exporter app
(one call from ``create_app``) and ties the background tasks (store thread,
webhook notifier, activity flush, periodic retention purge) to the app's
lifetime. Endpoints (see README: Ingestion, feedback and privacy API and ``/api/v1/openapi.json``):

- ``POST /api/v1/events`` (ingest bearer token): a batch of typed events,
  recorded per item; duplicates by ``id`` skipped.
- ``POST /api/v1/feedback`` (``X-API-Key``): durable feedback; urgent bugs
  notify the configured webhooks in the background.
- ``GET /api/v1/feedback`` (admin token, or none in demo mode): paginated,
  filtered, JSON or CSV.
- ``DELETE /api/v1/users/{user_id}``, ``POST .../opt-out`` and ``.../opt-in``
  (admin token): privacy operations.
- ``GET /api/v1/openapi.json``: generated from the same schemas (msgspec events, pydantic models).

Every 4xx is JSON ``{"error", "field", "message"}`` naming the offending
field (a body field, a query parameter, a header or ``body``).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hmac
import io
import json
import logging
import operator
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from pydantic import (BaseModel, ConfigDict, Field, JsonValue, StringConstraints, ValidationError,
                      field_validator)
from pydantic.json_schema import models_json_schema

from exporter import __version__
from exporter.catalog import ACTION, TIER, TIERS
from exporter.config import Config
from exporter.ingest.events import (DAY, DedupeWindow, EventBacklog, EventBatch, EventBatchResult, InvalidBatch, TooManyEvents,
                             decode_batch)
from exporter.api.notify import Notifier, summary
from exporter.instrument.recorder import URGENT_RATING, Recorder
from exporter.store.database import FeedbackRecord, Store, new_feedback_id

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
PURGE_INTERVAL_SECONDS = 3600.0
ACTIVITY_FLUSH_SECONDS = 5.0
# Accepted events wait in the backlog at most this long when nothing else records them
# (no scrape, few events): per-user activity and the active-user sketches stay current.
BACKLOG_FOLD_SECONDS = 1.0
MAX_PENDING_ACTIVITY = 50_000
DIGEST_CACHE_LIMIT = 10_000
MAX_TEXT = 4000
MAX_METADATA_BYTES = 4096
MAX_PAGE = 500
CSV_PAGE = 1000
FEEDBACK_TYPES = ("bug", "feature_request", "general", "survey")


# --- schemas ------------------------------------------------------------------------

class FeedbackIn(BaseModel):
    """The body of ``POST /api/v1/feedback``. Tier and user come from the API key."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    type: Literal[FEEDBACK_TYPES]  # type: ignore[valid-type]
    rating: int = Field(ge=1, le=5, description="1 (worst) to 5; a bug rated 2 or lower is urgent")
    text: Annotated[str, StringConstraints(max_length=MAX_TEXT, pattern=r"^[^\x00]*$")] = Field(
        "", description=f"free text, at most {MAX_TEXT} characters")
    metadata: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], JsonValue] | None = Field(
        None, max_length=32,
        description=f"optional context (app version, page...), at most 32 keys and {MAX_METADATA_BYTES} bytes "
                    "as JSON; no personal data")

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value):
        if value is None:
            return value
        try:
            encoded = json.dumps(value, separators=(",", ":"), allow_nan=False)
        except ValueError:
            raise ValueError("must not contain NaN or Infinity") from None
        if len(encoded.encode()) > MAX_METADATA_BYTES:
            raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
        return value


class FeedbackCreated(BaseModel):
    id: str
    created_at: str = Field(description="ISO 8601, UTC")
    urgent: bool


class FeedbackItem(BaseModel):
    id: str
    created_at: str = Field(description="ISO 8601, UTC")
    tier: str
    type: str
    rating: int
    urgent: bool
    text: str
    metadata: dict[str, JsonValue] | None
    user_hash: str | None = Field(description="HMAC of the user id; null for opted-out users")


class FeedbackPage(BaseModel):
    items: list[FeedbackItem]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page; null at the end")


class FeedbackQuery(BaseModel):
    """Query parameters of ``GET /api/v1/feedback``."""

    model_config = ConfigDict(extra="forbid")
    tier: Literal[TIERS] | None = None  # type: ignore[valid-type]
    type: Literal[FEEDBACK_TYPES] | None = None  # type: ignore[valid-type]
    since: datetime | None = Field(None, description="ISO 8601 (UTC if no offset) or unix seconds")
    limit: int = Field(50, ge=1, le=MAX_PAGE, description="page size (JSON only)")
    cursor: int | None = Field(None, ge=1, le=2**62, description="from next_cursor of the previous page")
    format: Literal["json", "csv"] = Field("json", description="csv exports every matching row")


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable code")
    field: str = Field(description="the offending field, query parameter, header, or 'body'")
    message: str


class RemovedCounts(BaseModel):
    feedback: int
    notifications: int = Field(description="pending webhook deliveries of that feedback")
    activity: int = Field(description="daily per-user activity rows")


class UserRemoved(BaseModel):
    removed: RemovedCounts
    total: int


class OptOutState(BaseModel):
    opted_out: bool


class _UserPath(BaseModel):
    model_config = ConfigDict(strict=True)
    user_id: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]


# --- errors ---------------------------------------------------------------------------

class ApiError(web.HTTPException):
    """A refused request, raised by a handler: aiohttp sends it as the response (JSON naming the field).

    An ``HTTPException`` rather than a middleware catching a plain exception:
    no middleware frame on every request of the hot ingestion path.
    """

    def __init__(self, status: int, error: str, field: str, message: str, headers: dict | None = None):
        self.status_code = status
        super().__init__(headers=headers, content_type="application/json",
                         text=ErrorBody(error=error, field=field, message=message).model_dump_json())
        self.error = error
        self.field = field
        self.message = message


def _invalid(exc: ValidationError) -> ApiError:
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    if first["type"] == "json_invalid":
        return ApiError(400, "malformed_json", "body", first["msg"])
    return ApiError(400, "invalid_field", field, first["msg"])


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_ENCODE = msgspec.json.Encoder().encode
_EVENT_TYPE = operator.attrgetter("type")


# --- per-user activity ----------------------------------------------------------------

class UserActivity:
    """Per-user daily activity counts (hashed ids), buffered and flushed to the store.

    Also the one place that knows who opted out: ``track`` refuses them, and
    ``is_opted_out`` answers the recorder's hook for the active-users sketch.
    Thread-safe: the event backlog is recorded on whichever thread folds it
    (a scrape's, too).
    """

    def __init__(self, recorder: Recorder, clock: Callable[[], float] = time.time,
                 max_pending: int = MAX_PENDING_ACTIVITY):
        self.hasher = recorder.hasher
        self._guard = recorder.metrics.guard
        self._clock = clock
        self.max_pending = max_pending
        self.opted_out: set[str] = set()
        self.pending: dict[tuple[str, int, str, str], int] = {}
        self._lock = threading.Lock()  # pending and changes to _digests
        self._digests: dict[str, str] = {}
        self._labels: dict[tuple[str, str], tuple[str, str]] = {}

    def is_opted_out(self, hashed_user: str) -> bool:
        return hashed_user in self.opted_out

    def track(self, tier: str, user_id: str, kind: str, count: int = 1) -> bool:
        """Count ``count`` activities of a raw user id; False (nothing kept) when the user opted out."""
        return bool(self.track_all({(tier, user_id, kind): count}))

    def track_all(self, counts: dict[tuple[str, str, str], int]) -> list[tuple[str, str]]:
        """``track`` for each (tier, raw user id, kind) and its count; the (tier, user id) of those kept.

        One clock reading and one lock for all of them (a fold records hundreds).
        """
        day = int(self._clock() // DAY)
        rows, tracked = [], []
        for (tier, user_id, kind), count in counts.items():
            hashed = self._digests.get(user_id) or self._digest(user_id)
            if hashed not in self.opted_out:
                rows.append(((hashed, day, *self._row_labels(tier, kind)), count))
                tracked.append((tier, user_id))
        self._add_rows(rows)
        return tracked

    def add(self, hashed: str, tier: str, kind: str, count: int = 1) -> None:
        self._add_rows([((hashed, int(self._clock() // DAY), *self._row_labels(tier, kind)), count)])

    def _add_rows(self, rows: list[tuple[tuple[str, int, str, str], int]]) -> None:
        with self._lock:
            pending = self.pending
            for key, count in rows:
                pending[key] = pending.get(key, 0) + count

    def _digest(self, user_id: str) -> str:
        hashed = self.hasher.digest(user_id)
        with self._lock:
            if len(self._digests) >= DIGEST_CACHE_LIMIT:
                self._digests.clear()  # bounded; refills with whoever is active
            self._digests[user_id] = hashed
        return hashed

    def _row_labels(self, tier: str, kind: str) -> tuple[str, str]:
        labels = self._labels.get((tier, kind))
        if labels is None:
            # Bounded like the labels: allow-listed values or "other".
            bounded = kind if kind in ("session", "feedback") else self._guard.value(ACTION, kind)
            labels = (self._guard.value(TIER, tier), bounded)
            if len(self._labels) < DIGEST_CACHE_LIMIT:
                self._labels[tier, kind] = labels
        return labels

    def over_limit(self) -> bool:
        """Whether the buffer holds ``max_pending`` rows or more: time to flush, not wait for the timer."""
        return len(self.pending) >= self.max_pending

    def take(self) -> dict[tuple[str, int, str, str], int]:
        with self._lock:
            pending, self.pending = self.pending, {}
        return pending

    def forget(self, hashed: str) -> None:
        """Drop a user's buffered activity and cached digest (deletion)."""
        with self._lock:
            self.pending = {k: v for k, v in self.pending.items() if k[0] != hashed}
            self._digests = {user: digest for user, digest in self._digests.items() if digest != hashed}


# --- the API ------------------------------------------------------------------------------

class IngestApi:
    def __init__(self, config: Config, recorder: Recorder, store: Store | None = None,
                 notifier: Notifier | None = None, dedupe: DedupeWindow | None = None,
                 clock: Callable[[], float] = time.time):
        self.config = config
        self.recorder = recorder
        self.clock = clock
        self.store = store or Store(config.data_dir)
        self.notifier = notifier or Notifier(self.store, config.webhooks)
        self.dedupe = dedupe or DedupeWindow()
        self.activity = UserActivity(recorder, clock)
        self.backlog = EventBacklog(recorder, self.activity)
        self.config_opted_out = {recorder.hasher.digest(user) for user in config.opted_out_users}
        self.activity.opted_out |= self.config_opted_out
        self._ingest_tokens = [t.encode() for t in config.ingest_tokens]
        self._admin_tokens = [config.admin_token.encode()] if config.admin_token else []
        self._api_keys = {key.encode(): entry for key, entry in config.api_keys.items()}
        self._openapi: dict | None = None
        self._tasks: list[asyncio.Task] = []

    # --- authentication ---------------------------------------------------------------

    @staticmethod
    def _bearer(request: web.Request, tokens: list[bytes], what: str) -> None:
        challenge = {"WWW-Authenticate": 'Bearer realm="clary-exporter"'}
        header = request.headers.get("Authorization")
        if not header:
            raise ApiError(401, "unauthorized", "Authorization", f"missing bearer token ({what})", challenge)
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "unauthorized", "Authorization", "expected 'Bearer <token>'", challenge)
        given_bytes = given.strip().encode("utf-8", "replace")
        # Compare against every token, constant time each: no early exit on a match.
        matched = False
        for token in tokens:
            matched |= hmac.compare_digest(token, given_bytes)
        if not matched:
            raise ApiError(401, "unauthorized", "Authorization",
                           f"invalid {what} token" if tokens else f"no {what} token is configured", challenge)

    def _caller(self, request: web.Request):
        key = request.headers.get("X-API-Key")
        if not key:
            raise ApiError(401, "unauthorized", "X-API-Key", "missing API key")
        entry = self._api_keys.get(key.encode("utf-8", "replace"))
        if entry is None:
            raise ApiError(401, "unauthorized", "X-API-Key", "unknown API key")
        return entry

    def _admin(self, request: web.Request) -> None:
        self._bearer(request, self._admin_tokens, "admin")

    # --- body -----------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> bytes:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise self._too_large(limit)
        chunks, size = [], 0
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > limit:
                raise self._too_large(limit)
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    def _too_large(limit: int) -> ApiError:
        # Built only when raised: an ApiError renders its JSON body up front (~7 µs, on every batch otherwise).
        return ApiError(413, "body_too_large", "body", f"request body is over {limit} bytes")

    def _too_many(self, count: int) -> ApiError:
        limit = self.config.max_batch_items
        return ApiError(413, "too_many_events", "events", f"{count} events; at most {limit} per batch")

    # --- events ---------------------------------------------------------------------------

    async def post_events(self, request: web.Request) -> web.Response:
        self._bearer(request, self._ingest_tokens, "ingest")
        result = self.ingest(await self._body(request))
        return web.Response(body=_ENCODE(result), content_type="application/json")

    def ingest(self, body: bytes) -> EventBatchResult:
        """Validate and record one batch body; raises ApiError when the body as a whole is refused.

        Every valid item is accepted, unless its ``id`` was accepted recently,
        and recorded in bulk with other accepted events of its type
        (:class:`EventBacklog`): every scrape includes it.
        """
        try:
            valid, errors = decode_batch(body, self.config.max_batch_items)
        except InvalidBatch as exc:
            raise ApiError(400, exc.error, exc.field, exc.reason) from None
        except TooManyEvents as exc:
            raise self._too_many(exc.count) from None
        self.dedupe.tick()
        fresh, duplicates = self.dedupe.admit(valid)
        if fresh:
            self.backlog.add(fresh)
        if errors:
            batch = self.recorder.batch()
            for event_type, count in Counter(map(_EVENT_TYPE, errors)).items():
                batch.event(event_type, "rejected", count)
        if self.activity.over_limit():
            self._flush_soon()
        return EventBatchResult(accepted=len(fresh), rejected=len(errors), duplicates=duplicates, errors=errors)

    # --- feedback -------------------------------------------------------------------------

    async def post_feedback(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        body = await self._body(request)
        try:
            feedback = FeedbackIn.model_validate_json(body)
        except ValidationError as exc:
            self.recorder.event("feedback", "rejected")
            raise _invalid(exc) from None
        user_hash = self.recorder.hasher.digest(caller.user) if caller.user else None
        if user_hash is not None and self.activity.is_opted_out(user_hash):
            user_hash = None
        urgent = feedback.type == "bug" and feedback.rating <= URGENT_RATING
        record = FeedbackRecord(
            id=new_feedback_id(), created_at=self.clock(), tier=caller.tier, type=feedback.type,
            rating=feedback.rating, text=feedback.text, metadata=feedback.metadata, user_hash=user_hash,
            urgent=urgent,
        )
        deliveries = []
        if urgent and self.notifier.urls:
            payload = json.dumps(summary({**record.as_dict(), "created_at": _iso(record.created_at)}))
            deliveries = [(url, payload) for url in self.notifier.urls]
        try:
            # Shielded: once started, the commit completes even if the client goes away.
            await asyncio.shield(self.store.add_feedback(record, deliveries))
        except sqlite3.Error as exc:
            log.error("feedback not stored", extra={"fields": {"error": str(exc)[:200]}})
            raise ApiError(503, "storage_unavailable", "body", "feedback could not be stored; retry later") from None
        self.recorder.feedback(caller.tier, feedback.type, feedback.rating)
        self.recorder.event("feedback", "accepted")
        if user_hash is not None:
            self.activity.add(user_hash, caller.tier, "feedback")
        if deliveries:
            self.notifier.wake()
        created = FeedbackCreated(id=record.id, created_at=_iso(record.created_at), urgent=urgent)
        return web.json_response(created.model_dump(), status=201)

    async def get_feedback(self, request: web.Request) -> web.StreamResponse:
        if not self.config.demo:
            self._admin(request)
        try:
            query = FeedbackQuery.model_validate(dict(request.query))
        except ValidationError as exc:
            raise _invalid(exc) from None
        since = None
        if query.since is not None:
            since_dt = query.since if query.since.tzinfo else query.since.replace(tzinfo=timezone.utc)
            since = since_dt.timestamp()
        filters = {"tier": query.tier, "type": query.type, "since": since}
        if query.format == "csv":
            return await self._csv(request, filters, query.cursor)
        rows, cursor = await self.store.list_feedback(**filters, limit=query.limit, before_seq=query.cursor)
        page = {"items": [{**row, "created_at": _iso(row["created_at"])} for row in rows],
                "next_cursor": str(cursor) if cursor is not None else None}
        return web.json_response(page)

    async def _csv(self, request: web.Request, filters: dict, cursor: int | None) -> web.StreamResponse:
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
            rows, cursor = await self.store.list_feedback(**filters, limit=CSV_PAGE, before_seq=cursor)
            for row in rows:
                writer.writerow([
                    row["id"], _iso(row["created_at"]), row["tier"], row["type"], row["rating"],
                    "true" if row["urgent"] else "false", _csv_safe(row["text"]),
                    json.dumps(row["metadata"]) if row["metadata"] is not None else "", row["user_hash"] or "",
                ])
            await response.write(buffer.getvalue().encode())
            buffer.seek(0)
            buffer.truncate()
            if cursor is None:
                break
        await response.write_eof()
        return response

    # --- privacy operations ------------------------------------------------------------------

    def _user_hash(self, request: web.Request) -> str:
        try:
            user = _UserPath.model_validate({"user_id": request.match_info["user_id"]}).user_id
        except ValidationError as exc:
            raise _invalid(exc) from None
        return self.recorder.hasher.digest(user)

    async def delete_user(self, request: web.Request) -> web.Response:
        self._admin(request)
        hashed = self._user_hash(request)
        await self.flush_activity()  # buffered rows reach the table, then go with it
        self.activity.forget(hashed)
        removed = await self.store.delete_user(hashed)
        log.info("user data deleted", extra={"fields": {"removed": sum(removed.values())}})
        return web.json_response(UserRemoved(removed=RemovedCounts(**removed), total=sum(removed.values())).model_dump())

    async def opt_out(self, request: web.Request) -> web.Response:
        self._admin(request)
        hashed = self._user_hash(request)
        await self.store.set_opt_out(hashed, True, self.clock())
        self.backlog.fold()  # events accepted before the opt-out count as they did when they arrived
        self.activity.opted_out.add(hashed)  # earlier activity, buffered or stored, stays (DELETE removes it)
        return web.json_response(OptOutState(opted_out=True).model_dump())

    async def opt_in(self, request: web.Request) -> web.Response:
        self._admin(request)
        hashed = self._user_hash(request)
        if hashed in self.config_opted_out:
            raise ApiError(409, "opted_out_by_config", "user_id",
                           "this user is opted out in the configuration (opted_out_users); change it there")
        await self.store.set_opt_out(hashed, False)
        self.backlog.fold()  # events accepted while opted out stay untracked
        self.activity.opted_out.discard(hashed)
        return web.json_response(OptOutState(opted_out=False).model_dump())

    async def openapi(self, request: web.Request) -> web.Response:
        if self._openapi is None:
            self._openapi = openapi_document(self.config)
        return web.json_response(self._openapi)

    # --- background work ----------------------------------------------------------------------

    async def flush_activity(self) -> int:
        self.backlog.fold()  # the activity of every accepted event
        pending = self.activity.take()
        if pending:
            try:
                await self.store.add_activity(pending)
            except sqlite3.Error as exc:
                log.error("activity not stored", extra={"fields": {"error": str(exc)[:200], "rows": len(pending)}})
                return 0
        return len(pending)

    def _flush_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self.flush_activity())
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def purge(self) -> dict[str, int]:
        removed = await self.store.purge(self.config.retention_days, self.clock())
        if any(removed.values()):
            log.info("retention purge", extra={"fields": {**removed, "retention_days": self.config.retention_days}})
        return removed

    async def fold_backlog(self) -> None:
        self.backlog.fold()

    async def _every(self, seconds: float, job: Callable) -> None:
        while True:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background job failed", extra={"fields": {"job": job.__name__}})
            await asyncio.sleep(seconds)

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        self.activity.opted_out |= await self.store.opted_out()
        await self.notifier.start()
        self._tasks += [
            asyncio.create_task(self._every(PURGE_INTERVAL_SECONDS, self.purge), name="clary-purge"),
            asyncio.create_task(self._every(ACTIVITY_FLUSH_SECONDS, self.flush_activity),
                                name="clary-activity-flush"),
            asyncio.create_task(self._every(BACKLOG_FOLD_SECONDS, self.fold_backlog), name="clary-backlog-fold"),
        ]
        try:
            yield
        finally:
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._tasks.clear()
            await self.flush_activity()
            await self.notifier.stop()
            await self.store.close()


def _csv_safe(text: str) -> str:
    """Neutralise spreadsheet formulas in exported free text (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


INGEST = web.AppKey("clary.ingest", IngestApi)


def setup_api(app: web.Application, config: Config, recorder: Recorder, **kwargs: Any) -> IngestApi:
    """Add the API's routes under /api/v1/ to ``app`` and tie its background tasks to it.

    Routes of ``app`` itself, not a sub-application: a sub-application adds a
    middleware frame and a resolution step to every request.
    """
    api = IngestApi(config, recorder, **kwargs)
    # The recorder's opt-out hook (active-user sketches, sessions) answers from the same set.
    previous = getattr(recorder, "is_opted_out", None)
    mine = api.activity.is_opted_out
    recorder.is_opted_out = mine if previous is None else (lambda hashed: previous(hashed) or mine(hashed))
    routes = app.router
    routes.add_post(PREFIX + "/events", api.post_events)
    routes.add_post(PREFIX + "/feedback", api.post_feedback)
    routes.add_get(PREFIX + "/feedback", api.get_feedback)
    routes.add_delete(PREFIX + "/users/{user_id:[^/]+}", api.delete_user)
    routes.add_post(PREFIX + "/users/{user_id:[^/]+}/opt-out", api.opt_out)
    routes.add_post(PREFIX + "/users/{user_id:[^/]+}/opt-in", api.opt_in)
    routes.add_get(PREFIX + "/openapi.json", api.openapi)
    app.cleanup_ctx.append(api.lifecycle)
    app[INGEST] = api
    return api


# --- OpenAPI ------------------------------------------------------------------------------------

def _error_responses(*codes: int) -> dict:
    reasons = {400: "invalid input; `field` names it", 401: "missing or wrong credentials; nothing recorded",
               409: "conflict with the configuration", 413: "body or batch over the limit; nothing recorded",
               503: "storage unavailable; retry"}
    return {str(code): {"description": reasons[code],
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
            for code in codes}


def _json(ref: str, description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def openapi_document(config: Config) -> dict:
    """OpenAPI 3.1 for every endpoint, from the models the handlers validate with."""
    models = [(FeedbackIn, "validation"), (FeedbackCreated, "serialization"), (FeedbackPage, "serialization"),
              (ErrorBody, "serialization"), (UserRemoved, "serialization"), (OptOutState, "serialization")]
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas = top["$defs"]
    # The event schemas are msgspec structs (exporter.ingest.events).
    schemas.update(msgspec.json.schema_components((EventBatch, EventBatchResult),
                                                  ref_template="#/components/schemas/{name}")[1])
    schemas["EventBatch"]["properties"]["events"]["maxItems"] = config.max_batch_items
    query = FeedbackQuery.model_json_schema()
    parameters = [{"name": name, "in": "query", "required": False, "schema": prop,
                   "description": prop.get("description", "")}
                  for name, prop in query["properties"].items()]
    user_param = {"name": "user_id", "in": "path", "required": True,
                  "schema": _UserPath.model_json_schema()["properties"]["user_id"],
                  "description": "the raw user id (as in the API-key table); hashed on arrival"}
    admin = [{"adminToken": []}]
    json_body = lambda ref: {"required": True, "content": {"application/json": {"schema": {  # noqa: E731
        "$ref": f"#/components/schemas/{ref}"}}}}
    paths = {
        f"{PREFIX}/events": {"post": {
            "summary": "Ingest a batch of typed events",
            "description": "Valid items are recorded even when others are invalid; each rejected item is listed "
                           "with its index, field and reason. An event whose `id` was accepted recently is skipped. "
                           f"Body at most {config.max_body_bytes} bytes, at most {config.max_batch_items} events.",
            "operationId": "postEvents", "security": [{"ingestToken": []}],
            "requestBody": json_body("EventBatch"),
            "responses": {"200": _json("EventBatchResult", "per-item result"), **_error_responses(400, 401, 413)},
        }},
        f"{PREFIX}/feedback": {
            "post": {
                "summary": "Submit feedback (stored durably before the 201)",
                "description": "Tier and user come from the API key. A bug rated 2 or lower is urgent and "
                               "notifies the configured webhooks in the background.",
                "operationId": "postFeedback", "security": [{"apiKey": []}],
                "requestBody": json_body("FeedbackIn"),
                "responses": {"201": _json("FeedbackCreated", "stored"), **_error_responses(400, 401, 413, 503)},
            },
            "get": {
                "summary": "List stored feedback, newest first (JSON pages or CSV export)",
                "operationId": "listFeedback", "security": [] if config.demo else admin,
                "parameters": parameters,
                "responses": {"200": {"description": "a page of feedback, or CSV with ?format=csv", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/FeedbackPage"}},
                    "text/csv": {"schema": {"type": "string"}}}}, **_error_responses(400, 401)},
            },
        },
        f"{PREFIX}/users/{{user_id}}": {"delete": {
            "summary": "Delete every stored record of a user",
            "operationId": "deleteUser", "security": admin, "parameters": [user_param],
            "responses": {"200": _json("UserRemoved", "rows removed, per table"), **_error_responses(400, 401)},
        }},
        f"{PREFIX}/users/{{user_id}}/opt-out": {"post": {
            "summary": "Opt a user out of per-user tracking (persisted)",
            "operationId": "optOut", "security": admin, "parameters": [user_param],
            "responses": {"200": _json("OptOutState", "opted out"), **_error_responses(400, 401)},
        }},
        f"{PREFIX}/users/{{user_id}}/opt-in": {"post": {
            "summary": "Undo an opt-out made through the API",
            "operationId": "optIn", "security": admin, "parameters": [user_param],
            "responses": {"200": _json("OptOutState", "opted in"), **_error_responses(400, 401, 409)},
        }},
        f"{PREFIX}/openapi.json": {"get": {
            "summary": "This document", "operationId": "openapi", "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
        }},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Clary AI exporter API", "version": __version__,
                 "description": "Event ingestion, feedback and privacy operations of clary-exporter."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "ingestToken": {"type": "http", "scheme": "bearer", "description": "ingest_tokens / CLARY_INGEST_TOKENS"},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "admin_token / CLARY_ADMIN_TOKEN"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                           "description": "a Clary API key (api_keys); tier and user come from it"},
            },
        },
    }
