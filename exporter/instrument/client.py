"""A small batching client for the exporter's ingestion API.

Python components that are not instrumented in-process (workers, the license
server) report events with it::

    async with EventClient("http://exporter:25279", token) as client:
        await client.send({"type": "queue_length", "queue": "ocr", "length": 12})
        await client.send(events.Inference(tier="lite", model="ocr-fast", duration_seconds=0.2))

Events are queued and sent in batches (``batch_size`` items, or after
``flush_interval`` seconds), each event with an ``id`` so a batch retried
after a timeout is not counted twice by the exporter. Transport errors,
429 and 5xx are retried with exponential backoff; a 4xx is not (the
response says what is wrong). A batch still undelivered after every retry
is kept apart and resent first, as it was (same events, same order): with
several replicas sharing a store, the exporter recognises a batch resent
unchanged to another replica, not one re-batched with newer events. The queue is bounded: past ``max_queue``
the oldest events are dropped and counted, so a down exporter never grows
the caller's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections import deque
from typing import Any

import aiohttp
import msgspec

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class IngestError(Exception):
    """The exporter refused a request (4xx) or stayed unreachable through every retry."""

    def __init__(self, message: str, status: int | None = None, body: Any = None):
        super().__init__(message)
        self.status = status
        self.body = body


class EventClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        max_queue: int = 10_000,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._own_session = session is None
        self._queue: deque[dict] = deque()
        self._unsent: list[dict] = []  # a batch that may have reached the exporter: resent first, unchanged
        self._flusher: asyncio.Task | None = None
        self._send_lock = asyncio.Lock()
        # Totals over the client's life, from the exporter's answers.
        self.accepted = 0
        self.rejected = 0
        self.duplicates = 0
        self.dropped = 0
        self.errors: list[dict] = []  # the latest rejected items (bounded)

    # --- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> EventClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
            self._own_session = True
        return self._session

    async def close(self, flush: bool = True) -> None:
        """Send what is queued (with retries, unless ``flush`` is off), then release the connection pool."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        try:
            if flush:
                await self.flush()
            else:
                self.dropped += self.queued
                self._queue.clear()
                self._unsent = []
        finally:
            if self._own_session and self._session is not None:
                await self._session.close()
                self._session = None

    # --- events --------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._queue) + len(self._unsent)

    async def send(self, event: dict | msgspec.Struct) -> None:
        """Queue one event (a dict or an ``exporter.ingest.schemas`` struct); sends a batch once ``batch_size`` are queued."""
        item = msgspec.to_builtins(event) if isinstance(event, msgspec.Struct) else dict(event)
        item.setdefault("id", str(uuid.uuid4()))
        self._queue.append(item)
        self._bound()
        if len(self._queue) >= self.batch_size:
            await self.flush()
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.flush_interval)
        try:
            await self.flush()
        except IngestError as exc:
            log.warning("event batch not delivered: %s", exc)

    async def flush(self) -> None:
        """Send every queued event now, in batches; raises IngestError if a batch fails for good."""
        async with self._send_lock:
            while self._unsent or self._queue:
                batch, self._unsent = self._unsent, []
                if not batch:
                    batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
                try:
                    result = await self._post("/api/v1/events", {"events": batch},
                                              {"Authorization": f"Bearer {self.token}"})
                except asyncio.CancelledError:
                    self._unsent = batch  # not lost: resent as it was by the next flush
                    raise
                except IngestError as exc:
                    if exc.status is None:
                        # Unreachable through every retry: resent first by the next flush, unchanged (same
                        # ids in the same order), so a late success is not counted twice on any replica.
                        self._unsent = batch
                        self._bound()
                    raise
                self.accepted += result["accepted"]
                self.rejected += result["rejected"]
                self.duplicates += result["duplicates"]
                if result["errors"]:
                    self.errors = (self.errors + result["errors"])[-100:]

    def _bound(self) -> None:
        """Past ``max_queue`` events, the oldest queued ones are dropped (the unsent batch is kept whole)."""
        while self._queue and len(self._queue) + len(self._unsent) > self.max_queue:
            self._queue.popleft()
            self.dropped += 1

    # --- feedback ------------------------------------------------------------------------

    async def feedback(self, api_key: str, type: str, rating: int, text: str = "",
                       metadata: dict | None = None, feature: str | None = None) -> dict:
        """Submit feedback for the user behind ``api_key``; returns ``{"id", "created_at", "urgent"}``.

        Feedback has no idempotency key, so only failures that certainly did
        not store it (connection refused, 503 storage unavailable) are retried.
        """
        body: dict[str, Any] = {"type": type, "rating": rating, "text": text}
        if metadata is not None:
            body["metadata"] = metadata
        if feature is not None:  # from the feature allow-list; any other name is stored as "other"
            body["feature"] = feature
        return await self._post("/api/v1/feedback", body, {"X-API-Key": api_key}, safe_only=True)

    # --- transport -------------------------------------------------------------------------

    def _delay(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * 2 ** attempt) * random.uniform(0.5, 1.0)

    async def _post(self, path: str, body: dict, headers: dict, safe_only: bool = False) -> dict:
        url = self.base_url + path
        last: str = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self._delay(attempt - 1))
            try:
                async with self._http().post(url, json=body, headers=headers) as resp:
                    try:
                        payload = await resp.json(content_type=None)
                    except ValueError:
                        payload = None  # e.g. a proxy's HTML error page
                    if resp.status < 300 and isinstance(payload, dict):
                        return payload
                    retryable = resp.status == 503 if safe_only else resp.status in RETRY_STATUSES
                    if not retryable:
                        message = payload.get("message") if isinstance(payload, dict) else None
                        field = payload.get("field") if isinstance(payload, dict) else None
                        raise IngestError(f"{path}: HTTP {resp.status}: {field}: {message}", resp.status, payload)
                    last = f"HTTP {resp.status}"
            except aiohttp.ClientConnectorError as exc:
                last = f"{type(exc).__name__}: {exc}"
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                if safe_only:  # the request may have been stored: do not send it twice
                    raise IngestError(f"{path}: {type(exc).__name__}", None) from exc
                last = type(exc).__name__
        raise IngestError(f"{path}: gave up after {self.retries + 1} attempts ({last})")
