"""Background delivery of urgent-feedback notifications to webhooks.

Feedback that is urgent (a bug rated 2 or lower) is stored together with one
outbox row per configured webhook URL, in the same transaction (see
``exporter.store.database``). This module drains the outbox: it POSTs each row's JSON
summary, deletes the row on a 2xx answer, and otherwise schedules a retry
with exponential backoff (capped, with jitter). The user's request never
waits for any of this. Pending rows survive a restart and are retried as
soon as the exporter is back (delivery is at least once: receivers can
de-duplicate on the ``X-Clary-Delivery`` header).

Webhook URLs often embed a secret (Slack, Teams), so logs name only the host.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from exporter import __version__
from exporter.store.database import Delivery, Store

log = logging.getLogger(__name__)

TEXT_PREVIEW = 1000


def summary(feedback: dict[str, Any]) -> dict[str, Any]:
    """The JSON body sent to webhooks for one urgent feedback record.

    ``text`` doubles as the message for chat incoming-webhooks (Slack and
    compatible); ``feedback`` carries the structured fields. No user id.
    """
    text = feedback["text"]
    preview = text if len(text) <= TEXT_PREVIEW else text[:TEXT_PREVIEW] + "…"
    headline = f"Urgent Clary feedback: {feedback['type']} rated {feedback['rating']}/5 from a {feedback['tier']} customer"
    return {
        "event": "urgent_feedback",
        "text": f"{headline}: {preview}" if preview else headline,
        "feedback": {
            "id": feedback["id"],
            "created_at": feedback["created_at"],
            "tier": feedback["tier"],
            "type": feedback["type"],
            "rating": feedback["rating"],
            "text": preview,
            "metadata": feedback.get("metadata"),
        },
    }


def _host(url: str) -> str:
    return urlsplit(url).hostname or "?"


class Notifier:
    """Drains the webhook outbox in a background task."""

    def __init__(
        self,
        store: Store,
        urls: Sequence[str],
        base_backoff: float = 1.0,
        max_backoff: float = 300.0,
        timeout: float = 10.0,
        concurrency: int = 8,
        rng: random.Random | None = None,
    ):
        self.store = store
        self.urls = list(urls)
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.concurrency = concurrency
        self.rng = rng or random.Random()
        self.delivered = 0
        self.failed_attempts = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None

    def backoff(self, attempts: int) -> float:
        """Delay before the next try after ``attempts`` failed ones (1, 2, ...)."""
        delay = min(self.max_backoff, self.base_backoff * 2 ** max(0, attempts - 1))
        return delay * self.rng.uniform(0.8, 1.2)

    def wake(self) -> None:
        """New outbox rows were committed: look now rather than at the next timer."""
        self._wake.set()

    async def start(self) -> None:
        resumed, dropped = await self.store.resume_deliveries(self.urls, time.time())
        if resumed:
            log.info("resuming webhook deliveries", extra={"fields": {"pending": resumed}})
        if dropped:
            log.warning("dropped deliveries to webhooks no longer configured", extra={"fields": {"dropped": dropped}})
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": f"clary-exporter/{__version__}"},
        )
        self._task = asyncio.create_task(self._run(), name="clary-notifier")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.drain()
                next_at = await self.store.next_delivery_at()
            except asyncio.CancelledError:
                raise
            except Exception:  # a broken disk must not kill the loop for good
                log.exception("webhook outbox error")
                next_at = time.time() + self.base_backoff
            wait = 60.0 if next_at is None else min(60.0, max(0.0, next_at - time.time()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass

    async def drain(self) -> int:
        """Attempt every due delivery once; returns how many succeeded."""
        due = await self.store.due_deliveries(time.time(), limit=self.concurrency * 4)
        if not due:
            return 0
        limit = asyncio.Semaphore(self.concurrency)

        async def one(delivery: Delivery) -> bool:
            async with limit:
                return await self._deliver(delivery)

        results = await asyncio.gather(*(one(d) for d in due))
        return sum(results)

    async def _deliver(self, delivery: Delivery) -> bool:
        assert self._session is not None
        headers = {
            "Content-Type": "application/json",
            "X-Clary-Delivery": f"{delivery.feedback_id}/{delivery.id}",
        }
        error = None
        try:
            async with self._session.post(delivery.url, data=delivery.payload.encode(), headers=headers) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    self.delivered += 1
                    await self.store.delivery_done(delivery.id)
                    log.info("urgent feedback delivered", extra={"fields": {
                        "webhook_host": _host(delivery.url), "feedback_id": delivery.feedback_id,
                        "attempts": delivery.attempts + 1}})
                    return True
                error = f"HTTP {resp.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            error = type(exc).__name__
        attempts = delivery.attempts + 1
        delay = self.backoff(attempts)
        self.failed_attempts += 1
        await self.store.delivery_failed(delivery.id, time.time() + delay, error)
        log.warning("webhook delivery failed; will retry", extra={"fields": {
            "webhook_host": _host(delivery.url), "feedback_id": delivery.feedback_id, "error": error,
            "attempts": attempts, "retry_in_seconds": round(delay, 1)}})
        return False
