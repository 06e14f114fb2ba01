"""Opt-outs, consents and deletions made on any replica, applied on this one within a second.

Each replica keeps who opted out and who consented in memory
(``UserActivity``), loaded in full at start. The store appends every change
to the privacy feed (``exporter.store.privacy_feed``) in the transaction
that makes it; :class:`PrivacySync` reads the rows past the last one it
applied every ``POLL_SECONDS`` and applies them in order:

- ``opt_out`` / ``consent_withdrawn``: events accepted before are recorded
  first (as the replica that took the request does), then the user is
  refused; a withdrawal also drops the consent;
- ``opt_in``: the opt-out is lifted, except one from the configuration
  (``opted_out_users``), which only the configuration can lift;
- ``consent_granted``: the user is tracked (``privacy.consent: opt_in``);
- ``deleted``: the user's activity buffered here and error records queued
  here are dropped, consent forgotten, and once this replica's write in
  progress (if any) has finished, the user's activity and error rows are
  deleted again, so nothing written here around the deletion survives it.

The replica that took the request applies its own change a second time:
harmless, each step is idempotent. A storage failure skips a poll (health
reports it) and the next one resumes where it stopped. A poller that could
not read for longer than half the feed's horizon reloads the sets in full,
as a start does, since rows it missed may be purged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import groupby
from typing import TYPE_CHECKING

from exporter.store import privacy_feed

if TYPE_CHECKING:
    from exporter.api.app import IngestApi

POLL_SECONDS = 0.25  # IngestApi.lifecycle polls at this interval (IngestApi._every skips a failed poll)


class PrivacySync:
    """Follows the privacy feed and applies it to this replica's ``UserActivity`` and error queue."""

    def __init__(self, api: IngestApi, monotonic: Callable[[], float] = time.monotonic):
        self.api = api
        self.monotonic = monotonic
        self.last = 0  # seq of the last change applied; set at start (StorageWatch.privacy_seq)
        self.applied = 0  # changes applied since start
        self._last_read = monotonic()

    def start(self, seq: int) -> None:
        """Follow from ``seq``, read before the sets were loaded: a change made meanwhile is applied again."""
        self.last = seq
        self._last_read = self.monotonic()

    async def poll(self) -> int:
        """Apply every change past ``last``; how many. Raises StorageUnavailable (the next poll resumes)."""
        api = self.api
        if self.monotonic() - self._last_read > privacy_feed.HORIZON_SECONDS / 2:
            await self._reload()
        total = 0
        while True:
            changes = await api.store.run(privacy_feed.since, self.last)
            self._last_read = self.monotonic()
            for kind, group in groupby(changes, key=lambda change: change.change):
                run = list(group)
                await self._apply(kind, [change.user_hash for change in run])
                self.last = run[-1].seq  # only once applied: a failure retries the run
                total += len(run)
            if len(changes) < privacy_feed.READ_LIMIT:
                break
        self.applied += total
        return total

    async def _apply(self, kind: str, hashes: list[str]) -> None:
        activity = self.api.activity
        if kind in ("opt_out", "consent_withdrawn"):
            self.api.backlog.fold()  # events accepted before the change count as they did when they arrived
            activity.opted_out.update(hashes)
            if kind == "consent_withdrawn":
                activity.consented.difference_update(hashes)
        elif kind == "opt_in":
            self.api.backlog.fold()  # events accepted while opted out stay untracked
            activity.opted_out.difference_update(set(hashes) - self.api.config_opted_out)
        elif kind == "consent_granted":
            activity.consented.update(hashes)
        elif kind == "deleted":
            await self._deleted(hashes)

    async def _deleted(self, hashes: list[str]) -> None:
        api = self.api
        async with api.activity_writes:  # no flush of this replica is between take() and its commit
            api.backlog.fold()  # the user's events accepted here before the deletion go with it
            api.activity.forget(*hashes)
            api.activity.consented.difference_update(hashes)
            await api.errors.forget(*hashes)
            await api.store.run(privacy_feed.erase_late_rows, hashes)

    async def _reload(self) -> None:
        """The full sets from the store, as at start (the feed rows since ``last`` may be purged)."""
        api = self.api
        seq = await api.store.run(privacy_feed.latest)  # first: a change made while loading is applied again
        opted_out, consented = await api.store.opted_out(), await api.store.consented()
        api.activity.opted_out.intersection_update(opted_out | api.config_opted_out)
        api.activity.opted_out.update(opted_out)
        api.activity.consented.intersection_update(consented)
        api.activity.consented.update(consented)
        self.start(seq)
