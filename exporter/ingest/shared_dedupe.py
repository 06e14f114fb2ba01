"""The in-memory half of the cross-replica dedupe window: batch digests, the write-behind queue, the tail's cursor.

The request path never waits on the database. It admits a batch against
the local :class:`DedupeWindow` as before (per event: same-replica retries,
partial overlaps), then (PostgreSQL only) against :attr:`SharedWindow.remote`,
the digests of batches other replicas accepted, learnt by a background task
(``exporter.api.shared_dedupe``) that also writes this replica's batch
digests to the shared store.

The shared window works per batch: a client retrying after a timeout
resends the same events, same ids, same order (the bundled client does),
so one digest over the batch's ids recognises the retry on another
replica. Ids are client-chosen strings: only a keyed BLAKE2b digest (the
HMAC secret, shared by the replicas, derives the key) leaves the process.
One digest a batch costs about 0.09 µs an event for a batch of 100 UUIDs,
half of it BLAKE2b over their 3.7 kB (hashing each id cost 0.5 µs).
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec

from exporter.ingest.dedupe import DedupeWindow
from exporter.ingest.schemas import EventBase

DIGEST_BYTES = 12  # 96 bits: no false duplicate in practice among the batches of an hour
QUEUE_CAP = 100_000  # batch digests waiting for the store; beyond, the oldest are dropped (store down or slow)
# A seq missing from the tail is re-read this long: longer than a statement may run
# (exporter.store.postgres.STATEMENT_TIMEOUT_MS), so a slow insert committing late is still seen.
GAP_GRACE_SECONDS = 12.0
MAX_GAPS = 256


def digester(secret: str | None) -> Callable[[], Any]:
    """A factory of fresh BLAKE2b states, keyed from ``secret`` when there is one (copying a keyed state is cheap)."""
    key = b"" if not secret else hashlib.blake2b(secret.encode(), digest_size=32, person=b"clary-dedupe").digest()
    return hashlib.blake2b(digest_size=DIGEST_BYTES, key=key, person=b"clary-batch-ids").copy


class SharedWindow:
    """Digests of batches other replicas accepted, and this replica's waiting to be shared."""

    def __init__(self, secret: str | None = None, max_ids: int = 100_000, ttl: float = 3600.0,
                 queue_cap: int = QUEUE_CAP, clock: Callable[[], float] | None = None):
        self.remote = DedupeWindow(max_ids, ttl, clock)  # bytes digests; rotated like the local window
        self.queue: deque[bytes] = deque()
        self.queue_cap = queue_cap
        self.dropped = 0  # digests dropped from a full queue, ever
        self._new = digester(secret)

    def digest(self, ids: list[str]) -> bytes:
        """The digest of a batch's ids, in order (events without an id left out).

        Ids joined by newlines, one string hashed; an id holding a newline
        would make that ambiguous, so such a batch is hashed as a JSON array
        behind a leading newline (which no joined form starts with).
        """
        joined = "\n".join(ids)
        state = self._new()
        if joined.count("\n") == len(ids) - 1:
            state.update(joined.encode())
        else:
            state.update(b"\n" + msgspec.json.encode(ids))
        return state.digest()

    def admit(self, batch: list[EventBase], fresh: list[EventBase]) -> tuple[list[EventBase], int]:
        """Of ``fresh`` (what the local window admitted from the valid events ``batch``), those to count, and how many not.

        The digest is over the whole ``batch``, so the first acceptance and a
        retry elsewhere agree. Known from another replica: every event with
        an id is a duplicate (those without pass). Else ``fresh`` passes and
        the digest is queued for the others.
        """
        try:
            ids = [event.id for event in batch]
            digest = self.digest(ids)
        except TypeError:  # some events carry no id
            ids = [event_id for event_id in ids if event_id is not None]
            if not ids:
                return fresh, 0
            digest = self.digest(ids)
        if digest in self.remote:
            kept = [event for event in fresh if event.id is None]
            return kept, len(fresh) - len(kept)
        self._enqueue(digest)
        return fresh, 0

    def _enqueue(self, digest: bytes) -> None:
        queue = self.queue
        queue.append(digest)
        if len(queue) > self.queue_cap:
            self.dropped += 1
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
        """Batch digests other replicas accepted: concatenated, as the store's rows hold them."""
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
