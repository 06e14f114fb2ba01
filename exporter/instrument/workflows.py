"""User workflows: per live session only its last action, turned into transition and funnel counts.

A session is named by an opaque id the caller sends with each action; the
recorder hashes it (keyed BLAKE2b under a subkey of the HMAC secret,
``Hasher.session_key``) before it reaches this module, which keeps per
session only its tier, last action, how far it got in each funnel and when
it was last seen. From that it derives:

- transitions ``(tier, from_action, to_action)``: ``start`` before the
  session's first action, ``end`` after its last, once the session ends
  (an explicit end, idle past ``idle_timeout``, or evicted past
  ``max_sessions``, least recently seen first);
- funnel steps ``(tier, funnel, step, action)``: a session reaches step *n*
  of a funnel when it performs the step's action after reaching step
  *n - 1*; other actions may come between (steps in order, not
  consecutive), and each session counts at most once per step.

Memory is bounded by ``max_sessions`` entries of a few small objects each;
action and tier strings are the label guard's (allow-listed) values, never
raw input. The module counts nothing itself: calls return what to count, so
the recorder (or its batch) records it like any other label tuple.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

START = "start"
END = "end"
DEFAULT_IDLE_TIMEOUT = 1800.0
DEFAULT_MAX_SESSIONS = 100_000


@dataclass
class Moves:
    """What one call found to count: label tuples in the catalog's label order."""

    transitions: list[tuple[str, str, str]] = field(default_factory=list)  # (tier, from_action, to_action)
    steps: list[tuple[str, str, str, str]] = field(default_factory=list)  # (tier, funnel, step, action)
    evicted: list[tuple[str]] = field(default_factory=list)  # (tier,) per session evicted past the cap

    def __bool__(self) -> bool:
        return bool(self.transitions or self.steps or self.evicted)


class _Session:
    __slots__ = ("last", "progress", "seen", "tier")

    def __init__(self, tier: str, funnels: int, seen: float):
        self.tier = tier
        self.last = START
        self.progress = bytearray(funnels)  # steps reached, per funnel
        self.seen = seen


class Workflows:
    """Live sessions, least recently seen first; thread-safe.

    Args:
        funnels: funnel name -> its actions in order (the config validates them).
        clock: monotonic seconds (tests pass a fake).
        idle_timeout: seconds without an action after which a session ends.
        max_sessions: live sessions kept at once; past it the least recently
            seen one ends and counts as evicted.
    """

    def __init__(self, funnels: Mapping[str, Sequence[str]] | None = None, clock: Callable[[], float] = time.monotonic,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, max_sessions: int = DEFAULT_MAX_SESSIONS):
        if max_sessions < 1 or idle_timeout <= 0:
            raise ValueError("max_sessions and idle_timeout must be positive")
        self._funnels = tuple((name, tuple(steps)) for name, steps in (funnels or {}).items())
        self._clock = clock
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self._open: OrderedDict[bytes, _Session] = OrderedDict()
        self._lock = threading.Lock()
        self.scheduled = False  # whether the recorder runs expire() before scrapes

    def __len__(self) -> int:
        return len(self._open)

    def actions(self, actions: Iterable[tuple[str, str, bytes]]) -> Moves:
        """Record ``(tier, action, session key)`` triples in order; tier and action already label values."""
        moves = Moves()
        now = self._clock()
        with self._lock:
            self._expire(now, moves)
            sessions, funnels = self._open, self._funnels
            for tier, action, key in actions:
                session = sessions.get(key)
                if session is None:
                    session = sessions[key] = _Session(tier, len(funnels), now)
                    if len(sessions) > self.max_sessions:
                        evicted = sessions.popitem(last=False)[1]
                        self._end(evicted, moves)
                        moves.evicted.append((evicted.tier,))
                else:
                    sessions.move_to_end(key)
                    session.seen = now
                    session.tier = tier
                moves.transitions.append((tier, session.last, action))
                session.last = action
                progress = session.progress
                for index, (name, steps) in enumerate(funnels):
                    reached = progress[index]
                    if reached < len(steps) and steps[reached] == action:
                        progress[index] = reached + 1
                        moves.steps.append((tier, name, str(reached + 1), action))
        return moves

    def end(self, keys: Iterable[bytes]) -> Moves:
        """End sessions explicitly; an unknown (never seen, ended or expired) key counts nothing."""
        moves = Moves()
        now = self._clock()
        with self._lock:
            self._expire(now, moves)
            for key in keys:
                session = self._open.pop(key, None)
                if session is not None:
                    self._end(session, moves)
        return moves

    def expire(self) -> Moves:
        """End the sessions idle past the timeout (cheap when none is)."""
        moves = Moves()
        if self._open:
            now = self._clock()
            with self._lock:
                self._expire(now, moves)
        return moves

    def _expire(self, now: float, moves: Moves) -> None:
        sessions, oldest = self._open, now - self.idle_timeout
        while sessions:
            session = next(iter(sessions.values()))
            if session.seen > oldest:
                return
            sessions.popitem(last=False)
            self._end(session, moves)

    @staticmethod
    def _end(session: _Session, moves: Moves) -> None:
        moves.transitions.append((session.tier, session.last, END))
