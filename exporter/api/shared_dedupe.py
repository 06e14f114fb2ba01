"""The cross-replica dedupe window's background task (issue 18): share accepted batches, learn the others'.

Only on PostgreSQL (``store.url``); on SQLite there is one replica. Every
:data:`TICK_SECONDS` one store call writes the digests of the batches this
replica accepted since the last tick (one per batch, over its ids in order:
``exporter.ingest.shared_dedupe``) as one ``seen_events`` row (packed
digests; more rows past 20,000) and reads the rows other replicas wrote
since the last read (``exporter.store.seen_events``). So a batch resent as
it was to another replica more than about two ticks (~0.5 s) after it was
accepted is recognised there; a retry within that time may be counted
twice. The request path never waits for this: a slow or down store only
delays the sharing, and the queue is bounded (oldest digests dropped, logged once).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

from exporter.ingest.dedupe import DedupeWindow
from exporter.ingest.shared_dedupe import DIGEST_BYTES, Cursor, SharedWindow
from exporter.store import seen_events
from exporter.store.database import Store

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25
PURGE_SECONDS = 60.0
STARTUP_LOOKBACK_SECONDS = 60.0  # a replica starting learns the batches accepted this long ago (rolling restarts)
PAGE, PAGES = 32, 4  # tail rows (up to 20,000 digests each) per query, queries per tick
FINAL_FLUSH_SECONDS = 2.0


class SharedDedupe:
    """This replica's part of the shared window: ``admit`` on the request path, ``step`` every
    :data:`TICK_SECONDS` in the background (``IngestApi.lifecycle``), ``close`` at shutdown."""

    def __init__(self, store: Store, local: DedupeWindow, secret: str | None = None,
                 clock: Callable[[], float] = time.time, replica: str | None = None):
        self.store = store
        self.ttl = local.ttl
        self.window = SharedWindow(secret, local.max_ids, local.ttl)
        self.admit = self.window.admit  # the request path: no indirection
        self.clock = clock
        self.replica = replica or uuid.uuid4().hex[:12]
        self.cursor: Cursor | None = None
        self._purged_at = 0.0
        self._dropping = 0  # self.window.dropped at the last tick
        self._logged_drops = False

    @classmethod
    def for_store(cls, store: Store, local: DedupeWindow, secret: str | None) -> SharedDedupe | None:
        """The shared window when the store is shared (PostgreSQL), else None."""
        return cls(store, local, secret) if store.url else None

    async def step(self) -> int:
        """One tick: the queued digests stored, the others' learnt; how many digests were learnt."""
        now = self.clock()
        if self.cursor is None:
            self.cursor = Cursor(await self.store.run(seen_events.start, now - STARTUP_LOOKBACK_SECONDS))
        cursor, window = self.cursor, self.window
        window.remote.tick()
        taken = window.take(window.queue_cap)  # all of it: one row (or a few) per tick
        try:
            last, learnt, gaps, present = await self.store.run(
                seen_events.exchange, b"".join(taken), DIGEST_BYTES, self.replica, now, cursor.after,
                cursor.ranges(), PAGE, PAGES)
        except BaseException:
            window.restore(taken)
            raise
        cursor.advance(last, gaps)
        cursor.filled(present)
        window.learn(learnt)
        self._log_drops(now)
        if now - self._purged_at >= PURGE_SECONDS:
            self._purged_at = now
            await self.store.run(seen_events.purge, now - self.ttl)
        return len(learnt) // DIGEST_BYTES

    def _log_drops(self, now: float) -> None:
        """One warning when digests start being dropped; again only after the queue drained."""
        dropped = self.window.dropped
        if dropped > self._dropping:
            if not self._logged_drops:
                log.warning("shared dedupe window: queue full, oldest batch digests dropped (store slow or down);"
                            " retries of those batches on another replica may count twice",
                            extra={"fields": {"queue_cap": self.window.queue_cap}})
                self._logged_drops = True
            self._dropping = dropped
        elif self._logged_drops and not self.window.queue:
            self._logged_drops = False

    async def close(self) -> None:
        """At shutdown, before the store closes: share the batches accepted since the last tick (bounded)."""
        if self.window.queue:
            await asyncio.wait_for(self.step(), FINAL_FLUSH_SECONDS)

