"""Abuse limits of the feedback API: submissions per API key, urgent notifications per tier.

One API key once submitted 1,600 feedback items in 1.7 s, and every urgent
one went to every webhook. Two limits, both in memory and bounded:

- :class:`KeyBuckets`: a token bucket per API key (``feedback_rate_per_minute``,
  ``feedback_burst``); past it ``POST /api/v1/feedback`` answers 429 with
  ``Retry-After``. Only keys that passed authentication get a bucket, so the
  table is bounded by the configured keys; the key is never logged.
- :class:`UrgentGate`: an urgent feedback whose tier and text (NFKC,
  case-folded, whitespace collapsed) were notified within
  ``urgent_notify_window_seconds`` is not sent again; and at most
  ``urgent_notify_limit`` notifications go out per tier per window. The
  feedback is stored either way; what is held back counts in
  ``clary_feedback_notifications_suppressed_total{tier,reason}`` and is
  mentioned in the tier's next notification.

Each exporter replica keeps its own limits; a restart resets them.
"""

from __future__ import annotations

import hashlib
import time
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from exporter.config import Config

DUPLICATE = "duplicate"
RATE_LIMITED = "rate_limited"
SUPPRESS_REASONS = (DUPLICATE, RATE_LIMITED)


class KeyBuckets:
    """Token buckets by key: ``per_minute`` tokens a minute, at most ``burst`` saved up; 0 per minute: no limit."""

    MAX_KEYS = 100_000  # a safety net: callers pass only configured keys, far fewer

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """Spend one token of ``key``: 0.0 when allowed, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
        if key not in self._buckets and len(self._buckets) >= self.MAX_KEYS:
            del self._buckets[next(iter(self._buckets))]
        self._buckets[key] = (tokens - 1.0, now)
        return 0.0


@dataclass
class Ticket:
    """The gate's answer for one urgent feedback; ``send`` False means notify nobody."""

    tier: str
    digest: bytes
    send: bool
    reason: str | None = None
    suppressed_before: int = 0  # held back in this tier since its last notification (send only)
    at: float = 0.0


def text_digest(tier: str, text: str) -> bytes:
    """What makes two urgent reports "the same": tier and text, NFKC, case-folded, whitespace collapsed."""
    normal = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return hashlib.blake2b(f"{tier}\0{normal}".encode(), digest_size=16).digest()


class UrgentGate:
    """Dedupe and a per-tier sliding-window limit for urgent notifications.

    Memory: per tier at most ``limit`` send times and digests of sends in the
    window (only sent notifications are remembered), plus a counter.
    """

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._sent: dict[str, deque[float]] = {}
        self._digests: OrderedDict[bytes, float] = OrderedDict()
        self._held_back: dict[str, int] = {}

    def _expire(self, now: float) -> None:
        cutoff = now - self.window
        for times in self._sent.values():
            while times and times[0] <= cutoff:
                times.popleft()
        while self._digests and next(iter(self._digests.values())) <= cutoff:
            self._digests.popitem(last=False)

    def admit(self, tier: str, text: str) -> Ticket:
        """Decide for one urgent feedback and reserve its place; :meth:`release` undoes it."""
        now = self.clock()
        self._expire(now)
        digest = text_digest(tier, text)
        times = self._sent.setdefault(tier, deque())
        if digest in self._digests:
            reason = DUPLICATE
        elif len(times) >= self.limit:
            reason = RATE_LIMITED
        else:
            times.append(now)
            self._digests[digest] = now
            return Ticket(tier, digest, True, suppressed_before=self._held_back.pop(tier, 0), at=now)
        self._held_back[tier] = self._held_back.get(tier, 0) + 1
        return Ticket(tier, digest, False, reason, at=now)

    def release(self, ticket: Ticket) -> None:
        """The feedback was not stored after all: forget the reservation (a retry is no duplicate)."""
        if ticket.send:
            times = self._sent.get(ticket.tier)
            if times and ticket.at in times:
                times.remove(ticket.at)
            if self._digests.get(ticket.digest) == ticket.at:
                del self._digests[ticket.digest]
            if ticket.suppressed_before:
                self._held_back[ticket.tier] = self._held_back.get(ticket.tier, 0) + ticket.suppressed_before
        elif self._held_back.get(ticket.tier):
            self._held_back[ticket.tier] -= 1


class FeedbackLimits:
    """The feedback API's limits, as configured."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic):
        self.keys = KeyBuckets(config.feedback_rate_per_minute, config.feedback_burst, clock)
        self.urgent = UrgentGate(config.urgent_notify_limit, config.urgent_notify_window_seconds, clock)
