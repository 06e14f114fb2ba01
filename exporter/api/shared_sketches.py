"""Distinct users and licenses for the whole deployment, when replicas share one store (PostgreSQL).

Every ``SHARE_SECONDS`` (and once at shutdown) a replica upserts its
current, previous and not-yet-published HLL buckets into the ``sketches``
table (``exporter.store.sketches``), deletes rows older than the longest
window plus ``EXPIRE_MARGIN_SECONDS``, reads the other replicas' buckets of
each window and hands their union per (tier, window) to the collectors
(``exporter.instrument.sketches``). Each collector adds its own live
buckets at scrape time, so every replica exposes the same union (within
``SHARE_SECONDS`` of staleness) and ``max`` over replicas is the
deployment's count. A scrape never waits on the store: it reads the last
merged union. When the store fails the last union stays, and the next tick
publishes whatever could not be published.

With SQLite (one replica, one file) nothing here runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable

import datasketches

from exporter.catalog import TIERS
from exporter.instrument.sketches import LG_K
from exporter.store import sketches as sketch_store

log = logging.getLogger(__name__)

SHARE_SECONDS = 15.0
EXPIRE_MARGIN_SECONDS = 3600  # rows kept past their longest window: late replicas, clock skew
_TIERS = frozenset((*TIERS, "unknown"))


def merge(rows: Iterable[sketch_store.Row], windows: dict[str, dict[str, tuple[int, int]]],
          now: float) -> dict[str, dict[tuple[str, str], datasketches.hll_sketch]]:
    """Per kind, the union of ``rows`` per (tier, window) over the window's slots at ``now``."""
    unions: dict[tuple[str, str, str], datasketches.hll_union] = {}
    for kind, tier, size, slot, _replica, data in rows:
        tier = tier if tier in _TIERS else "unknown"
        sketch = None
        for window, (wsize, count) in windows.get(kind, {}).items():
            if wsize == size and int(now // size) - count < slot <= int(now // size):
                if sketch is None:
                    try:
                        sketch = datasketches.hll_sketch.deserialize(data)
                    except (RuntimeError, ValueError):  # not a sketch: skipped, the rest still counts
                        log.warning("unreadable shared sketch", extra={"fields": {"kind": kind, "size": size}})
                        break
                key = (kind, tier, window)
                if key not in unions:
                    unions[key] = datasketches.hll_union(LG_K)
                unions[key].update(sketch)
    merged: dict[str, dict[tuple[str, str], datasketches.hll_sketch]] = {kind: {} for kind in windows}
    for (kind, tier, window), union in unions.items():
        merged[kind][tier, window] = union.get_result()
    return merged


class SharedSketches:
    """This replica's side of the shared sketches: publish, expire, read and merge, one ``tick`` at a time."""

    def __init__(self, store, counters: Iterable, replica: str | None = None,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.counters = {counter.kind: counter for counter in counters}
        self.replica = replica or uuid.uuid4().hex[:12]  # per process start: a restart is a new replica
        self.clock = clock

    @classmethod
    def of(cls, store, recorder) -> SharedSketches | None:
        """The task for a recorder's collectors on a shared (PostgreSQL) store; None otherwise."""
        counters = [c for c in (getattr(recorder, "active_users", None), getattr(recorder, "active_licenses", None))
                    if c is not None and hasattr(c, "merged")]
        if store.db.dialect != "postgresql" or not counters:
            return None
        return cls(store, counters)

    def _changed(self, now: float) -> list[tuple[str, str, int, int, bytes]]:
        return [(kind, *row) for kind, counter in self.counters.items() for row in counter.changed(now)]

    def _published(self, rows: list[tuple[str, str, int, int, bytes]]) -> None:
        for kind, counter in self.counters.items():
            counter.published([row[1:] for row in rows if row[0] == kind])

    def _slots(self, now: float) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
        """Per (kind, size): the oldest slot any window needs, and the slot before which rows expire."""
        oldest: dict[tuple[str, int], int] = {}
        expire: dict[tuple[str, int], int] = {}
        for kind, counter in self.counters.items():
            for size, count in counter.windows.values():
                newest = int(now // size)
                oldest[kind, size] = min(oldest.get((kind, size), newest), newest - count + 1)
                before = newest - count - max(1, EXPIRE_MARGIN_SECONDS // size)
                expire[kind, size] = min(expire.get((kind, size), before), before)
        return oldest, expire

    async def tick(self) -> int:
        """Publish, expire and merge once; how many other replicas' buckets were merged.

        Raises ``StorageUnavailable`` when the store fails: the collectors keep the last union.
        """
        now = self.clock()
        rows = self._changed(now)
        oldest, expire = self._slots(now)
        found = await self.store.run(sketch_store.exchange, self.replica, rows, oldest, expire)
        self._published(rows)
        windows = {kind: counter.windows for kind, counter in self.counters.items()}
        merged = await asyncio.to_thread(merge, found, windows, now)
        for kind, counter in self.counters.items():
            counter.merged(merged[kind])
        return len(found)

    async def close(self) -> None:
        """Publish what this replica saw since the last tick (at shutdown)."""
        rows = self._changed(self.clock())
        await self.store.run(sketch_store.put, self.replica, rows)
        self._published(rows)
