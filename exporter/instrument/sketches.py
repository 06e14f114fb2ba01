"""Distinct users and licenses over sliding windows, in bounded memory.

Users are counted with HyperLogLog sketches (Apache DataSketches) over
HMAC-hashed ids: one sketch per tier per minute for the last hour and per
hour for the last day. A window's estimate is the union of its buckets, so
memory is fixed (about 85 sketches of ~2 KiB per tier) whatever the number
of users. Error is about 1.6 % at lg_k=12.

With a shared store (PostgreSQL, several replicas) each replica also
publishes its buckets and merges every other replica's
(``exporter.api.shared_sketches``): the union of all replicas is
what each one exposes, so ``max`` over replicas is the deployment's count.
``_others`` holds that last merged union per (tier, window); it is None
without a shared store, and exposition never waits for it.

Repeat activity is the common case (every request of a known caller), so
the hashed ids seen in the current minute are remembered, up to
``RECENT_LIMIT`` per tier, and a repeat within that minute costs one set
lookup instead of two sketch updates. Those hashes are dropped when the
minute ends; raw ids never get here.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar

import datasketches

from exporter.catalog import TIERS
from exporter.families import new_family

LG_K = 12
WINDOWS = {"5m": (60, 5), "1h": (60, 60), "24h": (3600, 24)}  # window: (bucket seconds, buckets)
_BUCKET_SECONDS = sorted({size for size, _ in WINDOWS.values()})
_TIERS = (*TIERS, "unknown")
_SMALLEST = _BUCKET_SECONDS[0]
# Hashed ids remembered per tier for the current minute (repeat suppression).
RECENT_LIMIT = 10_000


class _Buckets:
    """Time-bucketed sketches of one size, oldest dropped as time moves on."""

    def __init__(self, size: int, keep: int):
        self.size = size
        self.keep = keep
        self.sketches: OrderedDict[int, datasketches.hll_sketch] = OrderedDict()
        self.unshared: set[int] = set()  # slots created since the last successful publish

    def update(self, now: float, key: str) -> None:
        slot = int(now // self.size)
        sketch = self.sketches.get(slot)
        if sketch is None:
            sketch = self.sketches[slot] = datasketches.hll_sketch(LG_K, datasketches.tgt_hll_type.HLL_4)
            self.unshared.add(slot)
            self._expire(slot)
        sketch.update(key)

    def _expire(self, newest: int) -> None:
        while self.sketches and next(iter(self.sketches)) <= newest - self.keep:
            self.unshared.discard(self.sketches.popitem(last=False)[0])

    def changed(self, now: float) -> dict[int, bytes]:
        """Serialized buckets to publish: the current and previous ones, and any not yet published."""
        newest = int(now // self.size)
        return {slot: self.sketches[slot].serialize_compact()
                for slot in self.unshared | {newest, newest - 1} if slot in self.sketches}

    def estimate(self, now: float, count: int, others: datasketches.hll_sketch | None = None) -> float:
        newest = int(now // self.size)
        union = datasketches.hll_union(LG_K)
        for slot, sketch in self.sketches.items():
            if newest - count < slot <= newest:
                union.update(sketch)
        if others is not None:
            union.update(others)
        return union.get_result().get_estimate()


class _Shared:
    """What the shared-sketch task (``exporter.api.shared_sketches``) reads and sets, under ``_lock``."""

    kind: str
    windows: ClassVar[dict[str, tuple[int, int]]]
    _buckets: dict[str, tuple[_Buckets, ...]]
    _lock: threading.Lock
    _others: dict[tuple[str, str], datasketches.hll_sketch] | None = None

    def changed(self, now: float) -> list[tuple[str, int, int, bytes]]:
        """(tier, size, slot, data) of this replica's buckets to publish."""
        with self._lock:
            return [(tier, b.size, slot, data) for tier, buckets in self._buckets.items()
                    for b in buckets for slot, data in b.changed(now).items()]

    def published(self, rows: Iterable[tuple[str, int, int, bytes]]) -> None:
        with self._lock:
            found = {(tier, b.size): b for tier, buckets in self._buckets.items() for b in buckets}
            for tier, size, slot, _ in rows:
                found[tier, size].unshared.discard(slot)

    def merged(self, others: dict[tuple[str, str], datasketches.hll_sketch]) -> None:
        """The union of the other replicas' buckets per (tier, window), from now on added to this replica's."""
        self._others = others


class ActiveUsers(_Shared):
    """Collector for ``clary_active_users{tier,window}``."""

    name = "active_users"
    kind = "users"
    windows = WINDOWS

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        keep = {size: max(c for s, c in WINDOWS.values() if s == size) for size in _BUCKET_SECONDS}
        self._tiers = {tier: {size: _Buckets(size, keep[size]) for size in _BUCKET_SECONDS} for tier in _TIERS}
        self._buckets = {tier: tuple(buckets.values()) for tier, buckets in self._tiers.items()}
        self._recent: dict[str, set[str]] = {tier: set() for tier in _TIERS}
        self._recent_slot: int | None = None
        self._lock = threading.Lock()

    def seen(self, tier: str, hashed_user: str) -> None:
        """Record activity of an (already hashed) user id; unknown tiers count as ``unknown``."""
        now = self._clock()
        with self._lock:
            self._new_minute(now)
            self._add(now, tier, hashed_user)

    def seen_all(self, users: Iterable[tuple[str, str]]) -> None:
        """``seen`` for each (tier, hashed user id) pair, with one clock reading and one lock for all."""
        now = self._clock()
        with self._lock:
            self._new_minute(now)
            for tier, hashed_user in users:
                self._add(now, tier, hashed_user)

    def _new_minute(self, now: float) -> None:
        # Every bucket size is a multiple of the smallest: a user already in this
        # minute's sketch is already in the current sketch of every size.
        slot = int(now // _SMALLEST)
        if slot != self._recent_slot:
            self._recent_slot = slot
            for recent in self._recent.values():
                recent.clear()

    def _add(self, now: float, tier: str, hashed_user: str) -> None:
        if tier not in self._recent:
            tier = "unknown"
        recent = self._recent[tier]
        if hashed_user in recent:
            return
        if len(recent) < RECENT_LIMIT:
            recent.add(hashed_user)
        for b in self._buckets[tier]:
            b.update(now, hashed_user)

    def estimate(self, tier: str, window: str) -> float:
        size, count = WINDOWS[window]
        others = (self._others or {}).get((tier, window))
        with self._lock:
            return self._tiers[tier][size].estimate(self._clock(), count, others)

    def collect(self) -> Iterator:
        family = new_family("clary_active_users")
        for tier in _TIERS:
            for window in WINDOWS:
                family.add_metric([tier, window], round(self.estimate(tier, window)))
        yield family


class ActiveLicenses(_Shared):
    """Collector for ``clary_licenses_active{tier}``: distinct licenses in 24 h.

    License ids are already short HMACs and bounded by the license series
    budget, so an exact map of last-seen times is cheap. Hourly HLL sketches
    of the same ids are what replicas share (``_Shared``): with a shared store
    the count is the estimate of every replica's union (exact at these sizes
    in practice: HLL keeps a list of hashes up to a few hundred ids).
    """

    name = "licenses_active"
    kind = "licenses"
    WINDOW_SECONDS = 24 * 3600
    windows: ClassVar[dict[str, tuple[int, int]]] = {"24h": (3600, 24)}

    def __init__(self, clock: Callable[[], float] = time.time, limit: int = 10_000):
        self._clock = clock
        self._limit = limit
        self._last_seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._buckets: dict[str, tuple[_Buckets, ...]] = {}
        self._lock = threading.Lock()

    def seen(self, tier: str, license_id: str) -> None:
        key = (tier, license_id)
        now = self._clock()
        with self._lock:
            before = self._last_seen.pop(key, None)
            self._last_seen[key] = now
            if before is None or before // 3600 != now // 3600:  # once per license per hour
                buckets = self._buckets.get(tier)
                if buckets is None and len(self._buckets) < 2 * len(_TIERS):
                    buckets = self._buckets[tier] = (_Buckets(3600, 24),)
                if buckets is not None:
                    buckets[0].update(now, license_id)
            while len(self._last_seen) > self._limit:
                self._last_seen.popitem(last=False)

    def collect(self) -> Iterator:
        cutoff = self._clock() - self.WINDOW_SECONDS
        counts = dict.fromkeys(_TIERS, 0)
        with self._lock:
            while self._last_seen and next(iter(self._last_seen.values())) < cutoff:
                self._last_seen.popitem(last=False)
            for tier, _ in self._last_seen:
                counts[tier] = counts.get(tier, 0) + 1
            if self._others:  # other replicas' licenses: the deployment's union (exporter.api.shared_sketches)
                now, others = self._clock(), self._others
                for tier in counts.keys() | {tier for tier, _ in others}:
                    theirs = others.get((tier, "24h"))
                    mine = self._buckets.get(tier)
                    if mine is not None:
                        counts[tier] = round(mine[0].estimate(now, 24, theirs))
                    elif theirs is not None:
                        counts[tier] = round(theirs.get_estimate())
        family = new_family("clary_licenses_active")
        for tier, count in counts.items():
            family.add_metric([tier], count)
        yield family
