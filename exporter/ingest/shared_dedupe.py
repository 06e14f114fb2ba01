"""The in-memory half of the cross-replica dedupe window: hashed ids, the write-behind queue, the tail's cursor.

The request path never waits on the database. It admits a batch against
the local :class:`DedupeWindow` as before, then (PostgreSQL only) against
:attr:`SharedWindow.remote`, the hashes of ids other replicas accepted,
learnt by a background task (``exporter.api.shared_dedupe``) that also
writes this replica's accepted ids, hashed, to the shared store.

Ids are client-chosen strings: only a keyed BLAKE2b digest (the HMAC
secret, shared by the replicas, derives the key) leaves the process.
Hashing costs about 0.4 µs an event, the price of the shared window; it is
done once, on the request path, so the queue holds digests, not ids.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from exporter.ingest.dedupe import DedupeWindow
from exporter.ingest.schemas import EventBase

DIGEST_BYTES = 12  # 96 bits: no false duplicate in practice among the ids of an hour
QUEUE_CAP = 100_000  # digests waiting for the store; beyond, the oldest are dropped (store down or slow)
# A seq missing from the tail is re-read this long: longer than a statement may run
# (exporter.store.postgres.STATEMENT_TIMEOUT_MS), so a slow insert committing late is still seen.
GAP_GRACE_SECONDS = 12.0
MAX_GAPS = 256


def digester(secret: str | None) -> Callable[[], Any]:
    """A factory of fresh BLAKE2b states, keyed from ``secret`` when there is one (copying a keyed state is cheap)."""
    key = b"" if not secret else hashlib.blake2b(secret.encode(), digest_size=32, person=b"clary-dedupe").digest()
    return hashlib.blake2b(digest_size=DIGEST_BYTES, key=key, person=b"clary-event-id").copy


class SharedWindow:
    """Hashes of ids other replicas accepted, and this replica's accepted ids waiting to be shared."""

    def __init__(self, secret: str | None = None, max_ids: int = 100_000, ttl: float = 3600.0,
                 queue_cap: int = QUEUE_CAP, clock: Callable[[], float] | None = None):
        self.remote = DedupeWindow(max_ids, ttl, clock)  # bytes digests; rotated like the local window
        self.queue: deque[bytes] = deque()
        self.queue_cap = queue_cap
        self.dropped = 0  # digests dropped from a full queue, ever
        self._new = digester(secret)

    def digest(self, event_id: str) -> bytes:
        state = self._new()
        state.update(event_id.encode())
        return state.digest()

    def admit(self, events: list[EventBase]) -> tuple[list[EventBase], int]:
        """The events no other replica accepted (as far as the tail knows), and how many it did.

        Called with the events the local window admitted. Their digests join
        the write-behind queue; events without an id pass untouched.
        """
        new = self._new
        digests = []
        append = digests.append
        for event in events:
            event_id = event.id
            if event_id is None:
                return self._admit_some(events)
            state = new()
            state.update(event_id.encode())
            append(state.digest())
        if not self.remote.isdisjoint(digests):
            remote = self.remote
            kept = [(event, digest) for event, digest in zip(events, digests) if digest not in remote]
            self._enqueue([digest for _, digest in kept])
            return [event for event, _ in kept], len(events) - len(kept)
        self._enqueue(digests)
        return events, 0

    def _admit_some(self, events: list[EventBase]) -> tuple[list[EventBase], int]:
        fresh: list[EventBase] = []
        digests: list[bytes] = []
        duplicates = 0
        for event in events:
            if event.id is not None:
                digest = self.digest(event.id)
                if digest in self.remote:
                    duplicates += 1
                    continue
                digests.append(digest)
            fresh.append(event)
        self._enqueue(digests)
        return fresh, duplicates

    def _enqueue(self, digests: list[bytes]) -> None:
        queue = self.queue
        queue.extend(digests)
        over = len(queue) - self.queue_cap
        if over > 0:
            self.dropped += over
            for _ in range(over):
                queue.popleft()

    def take(self, limit: int) -> list[bytes]:
        """Up to ``limit`` queued digests, oldest first (put back by :meth:`restore` if the store fails)."""
        queue = self.queue
        return [queue.popleft() for _ in range(min(limit, len(queue)))]

    def restore(self, digests: list[bytes]) -> None:
        """Put taken digests back in front; the oldest beyond the cap are dropped."""
        room = self.queue_cap - len(self.queue)
        if room < len(digests):
            self.dropped += len(digests) - max(room, 0)
            digests = digests[len(digests) - max(room, 0):]
        self.queue.extendleft(reversed(digests))

    def learn(self, raw: bytes) -> None:
        """Digests other replicas accepted: concatenated, as the store's rows hold them."""
        self.remote.update([raw[i:i + DIGEST_BYTES] for i in range(0, len(raw), DIGEST_BYTES)])



class Cursor:
    """Where the tail of ``seen_events`` stands, and the gaps behind it still worth re-reading.

    A seq is taken when a row is inserted, not when it commits, so a
    transaction on another replica may commit a lower seq after the tail
    read past it. Every seq missing below the last one read (a rolled back
    insert also spends one) is remembered for :data:`GAP_GRACE_SECONDS` and
    re-read until then: a row committing late is still learnt.
    """

    def __init__(self, after: int, clock: Callable[[], float] = time.monotonic):
        self.after = after
        self.clock = clock
        self.gaps: list[tuple[int, int, float]] = []  # (first, last, noticed at)

    def advance(self, last: int, gaps: list[tuple[int, int]]) -> None:
        """The tail read up to seq ``last``, missing the (first, last) ranges ``gaps``."""
        now = self.clock()
        self.gaps += [(first, end, now) for first, end in gaps]
        self.after = max(self.after, last)
        del self.gaps[:-MAX_GAPS]

    def filled(self, seqs: list[int]) -> None:
        """Seqs a re-read found in the gaps: a gap found whole is closed."""
        if seqs:
            found = set(seqs)
            self.gaps = [gap for gap in self.gaps if not found.issuperset(range(gap[0], gap[1] + 1))]

    def ranges(self) -> list[tuple[int, int]]:
        """The gaps to re-read now (those older than the grace are forgotten)."""
        horizon = self.clock() - GAP_GRACE_SECONDS
        self.gaps = [gap for gap in self.gaps if gap[2] >= horizon]
        return [(first, last) for first, last, _ in self.gaps]
