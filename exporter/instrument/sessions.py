"""Open sessions, bounded in number and age: a token maps to its tier and start time."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

# Open sessions tracked at once, and how long an open session is remembered.
MAX_SESSIONS = 100_000
SESSION_MAX_AGE = 24 * 3600.0


class OpenSessions:
    """Thread-safe; past ``max_sessions`` the oldest is forgotten, and none is kept past 24 h."""

    def __init__(self, clock: Callable[[], float], max_sessions: int = MAX_SESSIONS):
        self._clock = clock
        self._max = max_sessions
        self._open: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._open)

    def start(self, token: str, tier: str) -> None:
        now = self._clock()
        with self._lock:
            self._open[token] = (tier, now)
            self._expire(now)

    def end(self, token: str) -> tuple[str, float] | None:
        """``(tier, seconds open)`` of a session, or None for an unknown, ended or forgotten token."""
        now = self._clock()
        with self._lock:
            found = self._open.pop(token, None)
            self._expire(now)
        if found is None:
            return None
        tier, started = found
        return tier, max(0.0, now - started)

    def _expire(self, now: float) -> None:
        sessions = self._open
        while len(sessions) > self._max:
            sessions.popitem(last=False)
        while sessions and next(iter(sessions.values()))[1] < now - SESSION_MAX_AGE:
            sessions.popitem(last=False)
