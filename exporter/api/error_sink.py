"""Error records into the store, grouped, and the error-group metrics.

Records arrive two ways: the exporter's own unhandled errors (the demo API's
``instrument(..., report_errors=api.errors)``) and instrumented services'
``error`` events of ``POST /api/v1/events``. Either way :meth:`ErrorStore.report`
or :meth:`ErrorStore.accept` only queue them (at most ``max_pending``; past
that a record is dropped and counted), and a task writes what is queued to
the store in one transaction: a request never waits on the disk for this.

On arrival the user id is hashed (an opted-out user's record has none) and
the message and trace are redacted again (``exporter.logs.redact``): a
service that does not use our integrations may send them raw.

The collector part exposes the group families of the catalog: new groups and
regressions counted as the writes find them, open groups per tier and the
top 10 groups per tier by users affected from a snapshot of the store taken
after each write (and every ``REFRESH_SECONDS``), so a scrape never reads
the disk and the ``group`` label stays at 10 values per tier.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from exporter.catalog import TIER
from exporter.families import new_family
from exporter.ingest.schemas import ErrorOccurred
from exporter.instrument.error_report import fingerprint
from exporter.logs import redact
from exporter.store import errors as stored
from exporter.store.database import Store
from exporter.store.health import StorageUnavailable

log = logging.getLogger(__name__)

MAX_PENDING = 10_000
REFRESH_SECONDS = 60.0
TOP_PER_TIER = 10
_OPEN, _NEW, _REGRESSED, _USERS = ("clary_error_groups_open", "clary_error_groups_new_total",
                                    "clary_error_group_regressions_total", "clary_error_group_users")


class ErrorStore:
    """Queues error records for the store and exposes the error-group metrics (a collector)."""

    def __init__(self, store: Store, digest: Callable[[str], str | None], clock: Callable[[], float] = time.time,
                 max_pending: int = MAX_PENDING):
        self.store = store
        self.digest = digest  # raw user id -> hash, or None for an opted-out user
        self.clock = clock
        self.max_pending = max_pending
        self.dropped = 0
        self.new: Counter[str] = Counter()
        self.regressions: Counter[str] = Counter()
        self._pending: list[stored.ErrorRecord] = []
        self._writer: asyncio.Task | None = None
        self._open: dict[str, int] = {}
        self._top: list[tuple[str, str, int]] = []

    # --- arrival ------------------------------------------------------------------------

    def report(self, record: dict[str, Any]) -> bool:
        """An :class:`~exporter.instrument.error_report.ErrorSink`: one record of the exporter's own."""
        try:
            event = ErrorOccurred(**{k: v for k, v in record.items() if k not in ("type", "id")})
        except Exception:  # noqa: BLE001 - a record the schema refuses (an odd type name): counted, not raised
            self.dropped += 1
            return False
        return self.accept([event]) == 1

    def accept(self, events: Iterable[ErrorOccurred]) -> int:
        """Queue validated ``error`` events; returns how many were queued (the rest dropped and counted)."""
        queued = 0
        now = self.clock()
        for event in events:
            if len(self._pending) >= self.max_pending:
                self.dropped += 1
                continue
            self._pending.append(self._record(event, now))
            queued += 1
        if queued:
            self._wake()
        return queued

    def _record(self, event: ErrorOccurred, now: float) -> stored.ErrorRecord:
        trace = redact(event.trace)
        tier = event.tier if event.tier in TIER.values else "unknown"
        return stored.ErrorRecord(
            error_id=event.error_id, fingerprint=fingerprint(event.error_type, trace),
            # A sender's clock ahead of ours must not keep a record past retention.
            created_at=min(event.time, now) if event.time is not None else now, tier=tier, route=event.route,
            error_type=event.error_type, user_hash=self.digest(event.user_id) if event.user_id else None,
            message=redact(event.message), trace=trace)

    def _wake(self) -> None:
        if self._writer is None or self._writer.done():
            try:
                self._writer = asyncio.get_running_loop().create_task(self.write())
            except RuntimeError:  # no loop (a test calling accept directly): written by the next write()
                pass

    # --- writing ----------------------------------------------------------------------------

    async def write(self) -> int:
        """Store everything queued; on a storage failure the records stay queued (bounded) for the next write."""
        written = 0
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                changes = await self.store.run(stored.add_errors, batch)
            except StorageUnavailable:
                self._pending = (batch + self._pending)[-self.max_pending:]
                return written
            written += len(batch)
            for change in changes:
                (self.new if change.change == "new" else self.regressions)[change.tier] += 1
            await self.refresh()
        return written

    async def forget(self, *hashes: str, wait: float = 5.0) -> None:
        """Drop the users' queued records (a deletion made on another replica, ``exporter.api.privacy_sync``).

        Also after the write in progress, if any, has finished (up to ``wait``
        seconds): a batch it could not store comes back to the queue; one it
        stored is in the store, where the caller deletes it.
        """
        gone = set(hashes)
        self._pending = [record for record in self._pending if record.user_hash not in gone]
        if self._writer is not None and not self._writer.done():
            await asyncio.wait({self._writer}, timeout=wait)  # never cancels the writer
            self._pending = [record for record in self._pending if record.user_hash not in gone]

    async def refresh(self) -> None:
        """Re-read the open groups per tier and the top groups per tier for the gauges."""
        self._open = await self.store.run(stored.open_groups_by_tier)
        self._top = await self.store.run(stored.top_groups, TOP_PER_TIER)

    async def close(self) -> None:
        if self._writer is not None and not self._writer.done():
            await asyncio.gather(self._writer, return_exceptions=True)
        await self.write()

    # --- metrics --------------------------------------------------------------------------------

    def collect(self):
        tiers = (*TIER.values, TIER.fallback)
        families = []
        for family_spec, values in ((_OPEN, self._open), (_NEW, self.new), (_REGRESSED, self.regressions)):
            family = new_family(family_spec)
            for tier in tiers:
                family.add_metric([tier], float(values.get(tier, 0)))
            families.append(family)
        users = new_family(_USERS)
        for tier, group, count in self._top:
            users.add_metric([tier, group], float(count))
        families.append(users)
        return families
