"""The API's side of storage health: the start-up check, the re-check while running, a quiet shutdown.

- :meth:`StorageWatch.open` runs the start-up check (``exporter.store.checks``)
  before anything else of the API starts; a failure is a ``StorageError``
  (one line naming the path and the cause), which the CLI turns into exit 2.
- :meth:`StorageWatch.run` re-checks: a committed probe every
  ``PROBE_SECONDS`` while storage works (a read-only remount, a full disk or
  a deleted file is noticed with no traffic), and every ``RETRY_SECONDS``
  while it does not, opening the file again (a restored backup), until it
  works: then ``/readyz`` turns 200 again.
- :func:`quietly` runs a shutdown step so that a broken disk costs one log
  line, never the exit code: shutdown was asked for and happened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from exporter.api.user_activity import UserActivity
from exporter.store import checks, privacy_feed
from exporter.store.database import Store
from exporter.store.health import (
    PROBE_SECONDS,
    RETRY_SECONDS,
    StorageError,
    StorageUnavailable,
    describe,
)
from exporter.store.secrets import Secrets

log = logging.getLogger(__name__)


class StorageWatch:
    """Checks the store at start and keeps its health current while the exporter runs."""

    def __init__(self, store: Store, activity: UserActivity, secrets: Secrets | None,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.activity = activity
        self.secrets = secrets
        self.clock = clock
        self._last_probe = 0.0
        self.privacy_seq = 0  # the privacy feed's last seq before the sets were loaded (exporter.api.privacy_sync)

    async def open(self, *then: Callable[[], Awaitable[object]]) -> None:
        """The start-up check, the stored opt-outs into memory, then ``then`` (more start-up work on the store).

        Raises StorageError (one line) when any of it meets a storage failure.
        """
        try:
            notes = await self.store.run(checks.open_checked, secrets=self.secrets, now=self.clock())
            self.privacy_seq = await self.store.run(privacy_feed.latest)  # first: later changes are applied again
            self.activity.opted_out |= await self.store.opted_out()
            self.activity.consented |= await self.store.consented()  # opt_in mode (exporter.store.consent)
            for step in then:
                await step()
        except (StorageError, StorageUnavailable) as exc:
            await quietly(self.store.close)
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"{self.store.location}: {exc.cause}") from None
        for note in notes:
            log.info(note, extra={"fields": {"path": self.store.location}})
        self._last_probe = time.monotonic()

    async def check(self) -> bool:
        """One re-check: a probe while storage works, opening it again while it does not; whether it works."""
        health = self.store.health
        try:
            if health.up:
                await self.store.call("probe", self.clock())
                return True
            notes, opted_out = await self.store.run(checks.reopen, self.secrets, self.clock())
        except StorageUnavailable:
            return False  # health went (or stays) down, logged once on the way down
        except StorageError as exc:  # the file is missing, damaged, or of another secret
            health.still_down(str(exc))
            return False
        self.activity.opted_out |= opted_out  # a restored file may hold opt-outs made since
        for note in notes:
            log.info(note, extra={"fields": {"path": self.store.location}})
        health.recovered()
        return True

    async def run(self) -> None:
        """Re-check forever (a background task of the app)."""
        while True:
            await asyncio.sleep(RETRY_SECONDS)
            if self.store.health.up and time.monotonic() - self._last_probe < PROBE_SECONDS:
                continue
            self._last_probe = time.monotonic()
            try:
                await self.check()
            except Exception:  # a bug, not the disk (check() handles that): the watch goes on
                log.exception("storage re-check failed")


async def quietly(step: Callable[[], Awaitable[object]]) -> None:
    """Run one shutdown step; a failure is one warning line, not a traceback or a non-zero exit."""
    try:
        await step()
    except Exception as exc:  # noqa: BLE001 - whatever failed, shutdown goes on and exits 0
        log.warning("shutdown step failed", extra={"fields": {"step": getattr(step, "__name__", "?"),
                                                              "error": describe(exc)}})
