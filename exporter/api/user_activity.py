"""Per-user daily activity rows (hashed ids), buffered and flushed to the store; who opted out.

Not the active-user sketches (``exporter.instrument.sketches``): these rows
are per user and day, for deletion and retention; the sketches only count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from exporter.catalog import ACTION, TIER
from exporter.ingest.schemas import DAY
from exporter.instrument.hashing import Hasher
from exporter.instrument.recorder import Recorder

MAX_PENDING_ACTIVITY = 50_000
DIGEST_CACHE_LIMIT = 10_000


class UserActivity:
    """Per-user daily activity counts (hashed ids), buffered and flushed to the store.

    Also the one place that knows who opted out: ``track`` refuses them, and
    ``is_opted_out`` answers the recorder's hook for the active-users sketch.
    Thread-safe: the event backlog is recorded on whichever thread folds it
    (a scrape's, too).

    ``previous`` hashers are those of earlier HMAC secrets (a rotation,
    ``exporter.store.secrets``): a user opted out under one of them is found
    by :meth:`digest`, which then adds the current hash to the set, so the
    recorder's hook, which sees only current hashes, refuses them too.
    """

    def __init__(self, recorder: Recorder, clock: Callable[[], float] = time.time,
                 max_pending: int = MAX_PENDING_ACTIVITY, previous: Iterable[Hasher] = ()):
        self.hasher = recorder.hasher
        self.previous = tuple(previous)
        self._guard = recorder.metrics.guard
        self._clock = clock
        self.max_pending = max_pending
        self.opted_out: set[str] = set()
        self.consent_required = False
        self.consented: set[str] = set()
        self.pending: dict[tuple[str, int, str, str], int] = {}
        self._lock = threading.Lock()  # pending and changes to _digests
        self._digests: dict[str, str] = {}
        self._labels: dict[tuple[str, str], tuple[str, str]] = {}

    def is_opted_out(self, hashed_user: str) -> bool:
        """Whether nothing per user may be kept: opted out, or (opt_in mode) no consent recorded."""
        return hashed_user in self.opted_out or (self.consent_required and hashed_user not in self.consented)

    def track(self, tier: str, user_id: str, kind: str, count: int = 1) -> bool:
        """Count ``count`` activities of a raw user id; False (nothing kept) when the user opted out."""
        return bool(self.track_all({(tier, user_id, kind): count}))

    def track_all(self, counts: dict[tuple[str, str, str], int]) -> list[tuple[str, str]]:
        """``track`` for each (tier, raw user id, kind) and its count; the (tier, user id) of those kept.

        One clock reading and one lock for all of them (a fold records hundreds).
        """
        day = int(self._clock() // DAY)
        rows, tracked = [], []
        for (tier, user_id, kind), count in counts.items():
            hashed = self._digests.get(user_id) or self.digest(user_id)
            if not self.is_opted_out(hashed):
                rows.append(((hashed, day, *self._row_labels(tier, kind)), count))
                tracked.append((tier, user_id))
        self._add_rows(rows)
        return tracked

    def add(self, hashed: str, tier: str, kind: str, count: int = 1) -> None:
        self._add_rows([((hashed, int(self._clock() // DAY), *self._row_labels(tier, kind)), count)])

    def _add_rows(self, rows: list[tuple[tuple[str, int, str, str], int]]) -> None:
        with self._lock:
            pending = self.pending
            for key, count in rows:
                pending[key] = pending.get(key, 0) + count

    def digest(self, user_id: str) -> str:
        """The user's hash under the current secret; opted out (or consented) when they did so under a previous one."""
        hashed = self.hasher.digest(user_id)
        for found in (self.opted_out, self.consented if self.consent_required else None):
            if found is not None and self.previous and hashed not in found and any(
                    old.digest(user_id) in found for old in self.previous):
                found.add(hashed)
        with self._lock:
            if len(self._digests) >= DIGEST_CACHE_LIMIT:
                self._digests.clear()  # bounded; refills with whoever is active
            self._digests[user_id] = hashed
        return hashed

    def _row_labels(self, tier: str, kind: str) -> tuple[str, str]:
        labels = self._labels.get((tier, kind))
        if labels is None:
            # Bounded like the labels: allow-listed values or "other".
            bounded = kind if kind in ("session", "feedback") else self._guard.value(ACTION, kind)
            labels = (self._guard.value(TIER, tier), bounded)
            if len(self._labels) < DIGEST_CACHE_LIMIT:
                self._labels[tier, kind] = labels
        return labels

    def over_limit(self) -> bool:
        """Whether the buffer holds ``max_pending`` rows or more: time to flush, not wait for the timer."""
        return len(self.pending) >= self.max_pending

    def take(self) -> dict[tuple[str, int, str, str], int]:
        with self._lock:
            pending, self.pending = self.pending, {}
        return pending

    def hashes(self, user_id: str) -> list[str]:
        """The user's hash under every configured secret, the current one first (deletion, opt-in)."""
        return [self.hasher.digest(user_id), *(old.digest(user_id) for old in self.previous)]

    def forget(self, *hashed: str) -> None:
        """Drop a user's buffered activity and cached digest (deletion); one hash per configured secret."""
        with self._lock:
            self.pending = {k: v for k, v in self.pending.items() if k[0] not in hashed}
            self._digests = {user: digest for user, digest in self._digests.items() if digest not in hashed}

    def restore(self, rows: dict[tuple[str, int, str, str], int]) -> int:
        """Put back rows the store could not take (it is down), up to ``max_pending``; returns how many were dropped."""
        with self._lock:
            room = max(0, self.max_pending - len(self.pending))
            kept = dict(list(rows.items())[:room])
            for key, count in kept.items():
                self.pending[key] = self.pending.get(key, 0) + count
        return len(rows) - len(kept)

