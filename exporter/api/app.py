"""The ingestion, feedback and privacy HTTP API under ``/api/v1/``.

``setup_api(app, config, recorder)`` mounts everything on the exporter app
(one call from ``create_app``) and ties the background tasks (store thread,
webhook notifier, activity flush, periodic retention purge) to the app's
lifetime. Endpoints (docs/api.md and ``/api/v1/openapi.json``):

- ``POST /api/v1/events`` (ingest bearer token): a batch of typed events,
  recorded per item; duplicates by ``id`` skipped.
- ``POST /api/v1/feedback`` (``X-API-Key``): durable feedback; urgent bugs
  notify the configured webhooks in the background.
- ``GET /api/v1/feedback`` (admin token, in demo mode too): paginated,
  filtered, JSON or CSV.
- ``GET /api/v1/feedback/insights`` (admin token): pain points and
  improvement suggestions per feature over a window, JSON or CSV.
- ``DELETE /api/v1/users/{user_id}``, ``POST .../opt-out`` and ``.../opt-in``
  (admin token): privacy operations.
- ``GET /api/v1/errors``, ``GET /api/v1/errors/{error_id}`` and
  ``POST /api/v1/errors/groups/{fingerprint}/resolve`` (admin token): error
  records and groups (``exporter.api.errors_api``).
- ``GET /api/v1/openapi.json``: generated from the same schemas (msgspec events, pydantic models).

Every 4xx is JSON ``{"error", "field", "message"}`` naming the offending
field (a body field, a query parameter, a header or ``body``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import msgspec
from aiohttp import web

from exporter.api import errors_api, feedback, privacy
from exporter.api.auth import Credentials
from exporter.api.body import read_body
from exporter.api.error_sink import REFRESH_SECONDS, ErrorStore
from exporter.api.errors import ApiError
from exporter.api.insights import get_insights
from exporter.api.limits import FeedbackLimits
from exporter.api.notify import Notifier
from exporter.api.openapi import PREFIX, openapi_document
from exporter.api.privacy_sync import POLL_SECONDS, PrivacySync
from exporter.api.shared_dedupe import TICK_SECONDS, SharedDedupe
from exporter.api.shared_sketches import SHARE_SECONDS, SharedSketches
from exporter.api.storage import StorageWatch, quietly
from exporter.api.user_activity import UserActivity
from exporter.config import Config
from exporter.ingest.backlog import EventBacklog
from exporter.ingest.decode import EventBatchResult, InvalidBatch, TooManyEvents, decode_batch
from exporter.ingest.dedupe import DedupeWindow
from exporter.ingest.schemas import ErrorOccurred
from exporter.instrument.hashing import Hasher
from exporter.instrument.recorder import Recorder
from exporter.store.database import Store
from exporter.store.health import StorageUnavailable
from exporter.store.secrets import Secrets

log = logging.getLogger(__name__)

PURGE_INTERVAL_SECONDS = 3600.0
ACTIVITY_FLUSH_SECONDS = 5.0
# Accepted events wait in the backlog at most this long when nothing else records them
# (no scrape, few events): per-user activity and the active-user sketches stay current.
BACKLOG_FOLD_SECONDS = 1.0

_ENCODE = msgspec.json.Encoder().encode
_EVENT_TYPE = operator.attrgetter("type")


class IngestApi:
    """The API's state (store, notifier, dedupe window, backlog, per-user activity) and its background work."""

    def __init__(self, config: Config, recorder: Recorder, store: Store | None = None,
                 notifier: Notifier | None = None, dedupe: DedupeWindow | None = None,
                 clock: Callable[[], float] = time.time):
        self.config = config
        self.recorder = recorder
        self.clock = clock
        self.store = store or Store.for_config(config)
        self.notifier = notifier or Notifier(self.store, config.webhooks)
        self.limits = FeedbackLimits(config)  # per API key, and urgent notifications per tier
        self.dedupe = dedupe or DedupeWindow()
        # Ids accepted by other replicas sharing a PostgreSQL store (None on SQLite).
        self.shared_dedupe = SharedDedupe.for_store(self.store, self.dedupe, config.hmac_secret)
        # Earlier HMAC secrets (a rotation): their hashes still find stored users.
        self.activity = UserActivity(recorder, clock, previous=map(Hasher, config.hmac_previous_secrets))
        self.backlog = EventBacklog(recorder, self.activity)
        self.config_opted_out = {hashed for user in config.opted_out_users for hashed in self.activity.hashes(user)}
        self.activity.opted_out |= self.config_opted_out
        self.activity.consent_required = config.privacy.consent == "opt_in"  # exporter.store.consent
        secrets = Secrets.of(config.hmac_secret, config.hmac_previous_secrets) if config.hmac_secret else None
        self.storage = StorageWatch(self.store, self.activity, secrets, clock)
        self.errors = ErrorStore(self.store, self._tracked_hash, clock)  # error records (exporter.api.error_sink)
        self.activity_writes = asyncio.Lock()  # a flush's take-and-store; a deletion from the feed waits for it
        self.privacy = PrivacySync(self)  # opt-outs, consents, deletions made on other replicas
        self.auth = Credentials(config)
        self._openapi: dict | None = None
        self._tasks: list[asyncio.Task] = []
        # Deployment-wide distinct users and licenses when replicas share a PostgreSQL store.
        self.shared_sketches = SharedSketches.of(self.store, recorder)

    def _tracked_hash(self, user: str) -> str | None:
        """The user's hash, or None for an opted-out user (as feedback stores them)."""
        hashed = self.activity.digest(user)
        return None if self.activity.is_opted_out(hashed) else hashed

    def _too_many(self, count: int) -> ApiError:
        limit = self.config.max_batch_items
        return ApiError(413, "too_many_events", "events", f"{count} events; at most {limit} per batch")

    # --- events ---------------------------------------------------------------------------

    async def post_events(self, request: web.Request) -> web.Response:
        self.auth.ingest(request)
        result = self.ingest(await read_body(request, self.config.max_body_bytes, self.config.max_compression_ratio))
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
        if self.shared_dedupe is not None and fresh:  # one digest over the batch: a retry on another replica
            fresh, elsewhere = self.shared_dedupe.admit(valid, fresh)
            duplicates += elsewhere
        if fresh:
            if b'"error"' in body:  # a cheap test first: most batches carry no error record
                self.errors.accept([event for event in fresh if event.__class__ is ErrorOccurred])
            self.backlog.add(fresh)
        if errors:
            batch = self.recorder.batch()
            for event_type, count in Counter(map(_EVENT_TYPE, errors)).items():
                batch.event(event_type, "rejected", count)
        if self.activity.over_limit():
            self._flush_soon()
        return EventBatchResult(accepted=len(fresh), rejected=len(errors), duplicates=duplicates, errors=errors)

    async def openapi(self, request: web.Request) -> web.Response:
        if self._openapi is None:
            self._openapi = openapi_document(self.config)
        return web.json_response(self._openapi)

    # --- background work ----------------------------------------------------------------------

    async def flush_activity(self) -> int:
        self.backlog.fold()  # the activity of every accepted event
        async with self.activity_writes:
            pending = self.activity.take()
            if pending:
                try:
                    await self.store.add_activity(pending)
                except sqlite3.Error:  # storage is down (logged once by its health): kept for the next flush
                    dropped = self.activity.restore(pending)
                    if dropped:
                        log.warning("activity not stored", extra={"fields": {"rows": dropped}})
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
            except StorageUnavailable:
                pass  # logged once when storage went down; /readyz and clary_exporter_storage_up say so
            except Exception:
                log.exception("background job failed", extra={"fields": {"job": job.__name__}})
            await asyncio.sleep(seconds)

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        # First: a StorageError (one line, exit 2) before anything else starts.
        await self.storage.open(self.notifier.start)  # the notifier resumes the outbox from the store
        self.privacy.start(self.storage.privacy_seq)  # changes since the sets were loaded (privacy_sync)
        self._tasks += [
            asyncio.create_task(self.storage.run(), name="clary-storage-check"),
            asyncio.create_task(self._every(PURGE_INTERVAL_SECONDS, self.purge), name="clary-purge"),
            asyncio.create_task(self._every(ACTIVITY_FLUSH_SECONDS, self.flush_activity),
                                name="clary-activity-flush"),
            asyncio.create_task(self._every(BACKLOG_FOLD_SECONDS, self.fold_backlog), name="clary-backlog-fold"),
            asyncio.create_task(self._every(REFRESH_SECONDS, self.errors.refresh), name="clary-error-groups"),
            asyncio.create_task(self._every(POLL_SECONDS, self.privacy.poll), name="clary-privacy-sync"),
        ]
        if self.shared_sketches is not None:
            self._tasks.append(asyncio.create_task(self._every(SHARE_SECONDS, self.shared_sketches.tick),
                                                   name="clary-shared-sketches"))
        if self.shared_dedupe is not None:
            self._tasks.append(asyncio.create_task(self._every(TICK_SECONDS, self.shared_dedupe.step),
                                                   name="clary-shared-dedupe"))
        try:
            yield
        finally:
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._tasks.clear()
            # Whatever the disk does now, shutdown completes (one line each) and exits 0.
            shared = tuple(part.close for part in (self.shared_sketches, self.shared_dedupe) if part is not None)
            for step in (self.flush_activity, *shared, self.errors.close, self.notifier.stop, self.store.close):
                await quietly(step)
            if self.activity.pending:  # the last flush met a failing store
                log.warning("per-user activity not stored at shutdown: storage unavailable",
                            extra={"fields": {"rows": len(self.activity.pending)}})


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
    routes.add_post(PREFIX + "/feedback", partial(feedback.post_feedback, api))
    routes.add_get(PREFIX + "/feedback", partial(feedback.get_feedback, api))
    routes.add_get(PREFIX + "/feedback/insights", partial(get_insights, api))
    routes.add_delete(PREFIX + "/users/{user_id:[^/]+}", partial(privacy.delete_user, api))
    routes.add_post(PREFIX + "/users/{user_id:[^/]+}/opt-out", partial(privacy.opt_out, api))
    routes.add_post(PREFIX + "/users/{user_id:[^/]+}/opt-in", partial(privacy.opt_in, api))
    routes.add_post(PREFIX + "/users/{user_id:[^/]+}/consent", partial(privacy.consent, api))
    routes.add_get(PREFIX + "/users/{user_id:[^/]+}/export", partial(privacy.export_user, api))
    routes.add_get(PREFIX + "/errors", partial(errors_api.list_errors, api))
    routes.add_get(PREFIX + "/errors/{error_id:[^/]+}", partial(errors_api.get_error, api))
    routes.add_post(PREFIX + "/errors/groups/{fingerprint:[^/]+}/resolve", partial(errors_api.resolve, api))
    routes.add_get(PREFIX + "/openapi.json", api.openapi)
    app.cleanup_ctx.append(api.lifecycle)
    app[INGEST] = api
    return api


