"""Background delivery of urgent-feedback notifications to webhooks.

Feedback that is urgent (a bug rated 2 or lower) is stored together with one
outbox row per configured webhook, in the same transaction (see
``exporter.store.database``), unless the per-tier gate held it back
(``exporter.api.limits``). This module drains the outbox: it renders each
row's summary for its webhook's format (``exporter.api.webhook_text``: the
customer's text escaped, links and mentions neutralised), POSTs it, deletes
the row on a 2xx answer, and otherwise schedules a retry with exponential
backoff (capped, with jitter). The user's request never waits for any of
this. Pending rows survive a restart and are retried as soon as the exporter
is back (on SQLite; on PostgreSQL when their backoff or lease ends).

Several replicas on one PostgreSQL drain one outbox: a replica takes rows
with a claim (``exporter.store.outbox.claim``: ``FOR UPDATE SKIP LOCKED``,
then a lease longer than it needs to deliver the batch), so each row is sent
by one replica at a time and, once a receiver answers 2xx, deleted: each
urgent report is delivered once per receiver. The one gap: a replica killed
(or cut off from the store) between a receiver's 2xx and the commit of that
row's delete (each outcome is committed as soon as it is known) leaves the
row to be sent again when its lease ends. A replica stalled past its lease
(another may have claimed the row since) writes a failure only if the row
is still under its own claim, so its late backoff never makes the row due
while the new claimer sends it. Every attempt at one row
carries the same ``X-Clary-Delivery: <feedback id>/<delivery id>`` header
(the delivery id is the outbox row's, one per feedback and receiver) and the
body names the feedback id, so a receiver can drop that duplicate.

When the store cannot record an outcome (disk full, read-only, locked), the
outcome is kept in memory and written later: a delivered row is never sent
again because its delete failed, a failed one keeps its backoff, nothing new
is claimed until they are written (at most one batch is ever held), and the
notifier retries the store with its own backoff instead of every second.

Webhook URLs often embed a secret (Slack, Teams), so logs name only the host.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from exporter import __version__
from exporter.api.webhook_text import render
from exporter.config import Webhook
from exporter.store import outbox
from exporter.store.database import Store
from exporter.store.outbox import Delivery

log = logging.getLogger(__name__)

TEXT_PREVIEW = 1000
STORAGE_BACKOFF_CAP = 60.0
BATCH_ROUNDS = 4  # a claim takes this many rounds of ``concurrency`` deliveries
STORAGE_ERRORS = (sqlite3.Error, OSError)


def summary(feedback: dict[str, Any], suppressed: int = 0) -> dict[str, Any]:
    """What the outbox keeps for one urgent feedback: the structured fields, no user id.

    The body each webhook gets is rendered from it at delivery time, for that
    webhook's format (:func:`exporter.api.webhook_text.render`);
    ``suppressed`` is how many urgent reports of the tier were held back since
    its previous notification.
    """
    text = feedback["text"]
    preview = text if len(text) <= TEXT_PREVIEW else text[:TEXT_PREVIEW] + "…"
    body: dict[str, Any] = {
        "event": "urgent_feedback",
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
    if suppressed:
        body["suppressed"] = suppressed
    return body


def _host(url: str) -> str:
    return urlsplit(url).hostname or "?"


@dataclass(frozen=True)
class Outcome:
    """One delivery attempt's result, to be recorded in the outbox."""

    delivery_id: int
    delivered: bool
    attempts: int = 0  # failed attempts so far, this one included
    next_at: float = 0.0
    error: str = ""
    claimed_until: float = 0.0  # of a failure: the claim it was sent under (``Delivery.lease_until``)


class Notifier:
    """Drains the webhook outbox in a background task.

    ``urls``: the configured webhooks (``Webhook`` objects, or URLs that get
    their default format).
    """

    def __init__(
        self,
        store: Store,
        urls: Sequence[Webhook | str],
        base_backoff: float = 1.0,
        max_backoff: float = 300.0,
        timeout: float = 10.0,
        concurrency: int = 8,
        rng: random.Random | None = None,
        lease: float | None = None,
    ):
        hooks = [hook if isinstance(hook, Webhook) else Webhook.model_validate(hook) for hook in urls]
        self.formats = {hook.url: hook.format for hook in hooks}
        self.store = store
        self.urls = list(self.formats)
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.concurrency = concurrency
        self.batch = concurrency * BATCH_ROUNDS
        # A claimed batch is delivered in BATCH_ROUNDS rounds of at most ``timeout`` each: the lease outlasts
        # that twice over, so no other replica claims a row this one is still sending.
        self.lease = lease if lease is not None else max(outbox.LEASE_SECONDS, 2 * BATCH_ROUNDS * timeout)
        self.rng = rng or random.Random()
        self.delivered = 0
        self.failed_attempts = 0
        self.storage_failures = 0  # consecutive failed attempts to record outcomes
        self._unsaved: dict[int, Outcome] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None

    def backoff(self, attempts: int, cap: float | None = None) -> float:
        """Delay before the next try after ``attempts`` failed ones (1, 2, ...): doubling from
        ``base_backoff`` up to ``cap`` (``max_backoff``), ±20 % jitter."""
        cap = self.max_backoff if cap is None else cap
        exponent = min(max(0, attempts - 1), 64)  # 2.0 ** 64 is past any cap; no float overflow
        return min(cap, self.base_backoff * 2.0 ** exponent) * self.rng.uniform(0.8, 1.2)

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
        if self._unsaved:
            await self._save()  # a last try; what still fails is sent again after a restart

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.drain()
                next_at = None if self._unsaved else await self.store.run(outbox.next_delivery_at, self.urls)
                if not self._unsaved:
                    self.storage_failures = 0
            except asyncio.CancelledError:
                raise
            except STORAGE_ERRORS as exc:  # a broken disk must not kill the loop for good
                self._storage_failed(exc, "read")
                next_at = None
            except Exception:  # nor must anything else
                log.exception("webhook outbox error")
                self.storage_failures += 1
                next_at = None
            if self.storage_failures:
                wait = self.backoff(self.storage_failures, STORAGE_BACKOFF_CAP)
            else:
                wait = 60.0 if next_at is None else min(60.0, max(0.0, next_at - time.time()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except TimeoutError:
                pass

    def _storage_failed(self, exc: BaseException, what: str) -> None:
        self.storage_failures += 1
        if self.storage_failures == 1 or self.storage_failures % 10 == 0:
            log.warning("webhook outbox: storage unavailable; outcomes kept in memory", extra={"fields": {
                "operation": what, "error": f"{type(exc).__name__}: {str(exc)[:200]}",
                "unsaved": len(self._unsaved), "failures": self.storage_failures}})

    async def _save(self) -> bool:
        """Write the outcomes not recorded yet; False (and they stay in memory) when the store fails."""
        if not self._unsaved:
            return True
        outcomes = list(self._unsaved.values())
        done = [o.delivery_id for o in outcomes if o.delivered]
        failed = [(o.delivery_id, o.attempts, o.next_at, o.error) for o in outcomes if not o.delivered]
        claims = {o.delivery_id: o.claimed_until for o in outcomes if not o.delivered}
        try:
            await self.store.record_deliveries(done, failed, claims)
        except STORAGE_ERRORS as exc:
            self._storage_failed(exc, "write")
            return False
        for outcome in outcomes:
            if self._unsaved.get(outcome.delivery_id) is outcome:
                del self._unsaved[outcome.delivery_id]
        if self.storage_failures:
            log.info("webhook outbox: storage back; outcomes recorded", extra={"fields": {"recorded": len(outcomes)}})
        self.storage_failures = 0
        return True

    async def drain(self) -> int:
        """Claim a batch of due deliveries and attempt each once; returns how many succeeded.

        Only once every earlier outcome is recorded: a claim is a write too, and a row whose
        outcome is held in memory must not be claimed (and sent) again.
        """
        if not await self._save():
            return 0  # nothing new until the store records what was already sent
        due = await self.store.run(outbox.claim, time.time(), self.lease, self.batch, self.urls)
        if not due:
            return 0
        limit = asyncio.Semaphore(self.concurrency)

        async def one(delivery: Delivery) -> Outcome:
            async with limit:
                return await self._deliver(delivery)

        delivered, recording = 0, True
        # Each outcome is recorded as soon as it is known, not when the whole batch is done: a replica
        # killed after a receiver's 2xx sends that row again (when its lease ends) only if it dies in
        # the one commit that follows, not while the rest of the batch is still in flight.
        attempts = [asyncio.ensure_future(one(d)) for d in due]
        try:
            for attempt in asyncio.as_completed(attempts):
                outcome = await attempt
                delivered += outcome.delivered
                self._unsaved[outcome.delivery_id] = outcome
                if recording:  # after one failed write the rest wait in memory for the next drain
                    recording = await self._save()
        finally:
            for attempt in attempts:  # stopped mid-batch: no attempt outlives the notifier
                attempt.cancel()
        return delivered

    async def _deliver(self, delivery: Delivery) -> Outcome:
        assert self._session is not None
        attempts = delivery.attempts + 1
        headers = {
            "Content-Type": "application/json",
            "X-Clary-Delivery": f"{delivery.feedback_id}/{delivery.id}",
        }
        fields: dict[str, Any] = {"webhook_host": _host(delivery.url), "feedback_id": delivery.feedback_id,
                                  "attempts": attempts}
        error = None
        try:
            body = render(json.loads(delivery.payload), self.formats.get(delivery.url, "json"))
        except (ValueError, KeyError, TypeError) as exc:
            body, error = None, f"unreadable outbox row ({type(exc).__name__})"
        if body is not None:
            try:
                async with self._session.post(delivery.url, data=body, headers=headers) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        self.delivered += 1
                        log.info("urgent feedback delivered", extra={"fields": fields})
                        return Outcome(delivery.id, True)
                    error = f"HTTP {resp.status}"
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                error = type(exc).__name__
        delay = self.backoff(attempts)
        self.failed_attempts += 1
        log.warning("webhook delivery failed; will retry", extra={"fields": {
            **fields, "error": error, "retry_in_seconds": round(delay, 1)}})
        return Outcome(delivery.id, False, attempts, time.time() + delay, error or "", delivery.lease_until)
