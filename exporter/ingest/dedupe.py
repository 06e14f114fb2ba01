"""Event ids accepted recently: a batch retried after a timeout is not counted twice."""

from __future__ import annotations

import time
from collections.abc import Callable

from exporter.ingest.schemas import EventBase

class DedupeWindow:
    """Ids of recently accepted events, in bounded memory.

    Two generations of id sets: new ids go into the current one; when it
    holds ``max_ids / 2`` ids, or is ``ttl / 2`` seconds old (checked by
    ``tick``, once per batch), it becomes the previous generation and the
    old previous one is forgotten. So an accepted id is remembered for at
    least the next ``max_ids / 2`` ids or ``ttl / 2`` seconds, whichever
    comes first, and memory never holds more than ``max_ids`` ids, whatever
    the traffic. A retried batch arrives within seconds: well inside.
    Membership and insertion are set operations (no per-id bookkeeping),
    because this runs for every event.
    """

    def __init__(self, max_ids: int = 100_000, ttl: float = 3600.0, clock: Callable[[], float] | None = None):
        self.max_ids = max_ids
        self.ttl = ttl
        self._clock = clock or time.monotonic
        self._half = max(1, max_ids // 2)
        self._current: set[str] = set()
        self._previous: set[str] = set()
        self._since = self._clock()

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._current or event_id in self._previous

    def admit(self, events: list[EventBase]) -> tuple[list[EventBase], int]:
        """The events whose id is new or absent (their ids remembered from now on), and how many were not.

        A batch in one call, in C set operations when every id is new.
        """
        current, previous = self._current, self._previous
        ids = [event.id for event in events]  # a list, not a set: building a set of them cost more than the checks
        if previous.isdisjoint(ids) and current.isdisjoint(ids):
            # The usual batch: all new ids. Added at once; kept if they were distinct, none was None
            # and the generation did not pass its size (one by one would have rotated inside the batch).
            size = len(current)
            current.update(ids)
            if len(current) - size == len(ids) and len(current) <= self._half and None not in current:
                if len(current) == self._half:
                    self._rotate()
                return events, 0
            current.difference_update(ids)  # undone: none of them was in it before
        fresh: list[EventBase] = []
        duplicates = 0
        for event in events:  # otherwise id by id, as add() rotates
            event_id = event.id
            if event_id is not None:
                if event_id in self:
                    duplicates += 1
                    continue
                self.add(event_id)
            fresh.append(event)
        return fresh, duplicates

    def update(self, keys: list) -> None:
        """Remember ``keys``, in bulk: a generation still rotates when it holds ``max_ids / 2``."""
        while keys:
            room = max(1, self._half - len(self._current))
            self._current.update(keys[:room])
            keys = keys[room:]
            if len(self._current) >= self._half:
                self._rotate()

    def add(self, event_id: str) -> None:
        current = self._current
        current.add(event_id)
        if len(current) >= self._half:
            self._rotate()

    def tick(self) -> None:
        """Rotate by age; called once per batch rather than per id."""
        if self._clock() - self._since >= self.ttl / 2:
            self._rotate()
            if self._clock() - self._since >= self.ttl / 2:  # pragma: no cover - clock jumped
                self._rotate()

    def _rotate(self) -> None:
        self._previous = self._current
        self._current = set()
        self._since = self._clock()


