"""Whether the store works, and why not: the errors storage problems raise and the state they leave.

A broken disk must never look like a crash. Before this module a corrupt
``clary.db``, a directory in its place or a read-only file system meant a
50-line traceback and exit 1 at start (a crash loop under a restart policy,
taking ``/metrics`` down with it), or a running exporter answering aiohttp's
text/plain 500. Now:

- at start (and for ``clary-exporter purge``) every problem is a
  :class:`StorageError`: one line naming the path and the cause, exit 2;
- while running, a failed operation raises :class:`StorageUnavailable`: the
  API answers JSON 503 ``storage_unavailable``, :class:`StorageHealth` turns
  ``/readyz`` to 503 and ``clary_exporter_storage_up`` to 0, while
  ``/metrics`` keeps serving; the periodic re-check
  (``exporter.store.checks``) turns it back when the disk works again.

Nothing here imports the database module, so it can import this one.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import psycopg

from exporter.catalog import spec
from exporter.families import new_family

log = logging.getLogger(__name__)

# While storage works: a committed probe this often notices a read-only remount, a full disk or a
# deleted file even when no request touches the store. While it does not: how soon it is retried
# (and /readyz turns 200 again) once the disk is fixed; also the Retry-After of a 503.
PROBE_SECONDS = 30.0
RETRY_SECONDS = 5.0

# The ``operation`` label: what a failure affects, by the Database method that met it.
OPERATIONS = {
    "add_feedback": "feedback", "list_feedback": "feedback", "count": "feedback",
    "add_activity": "activity", "activity": "activity",
    "delete_user": "privacy", "set_opt_out": "privacy", "opted_out": "privacy",
    "purge": "retention",
    "due_deliveries": "outbox", "next_delivery_at": "outbox", "delivery_done": "outbox",
    "delivery_failed": "outbox", "record_deliveries": "outbox", "resume_deliveries": "outbox", "outbox": "outbox",
    "claim": "outbox",
    "open_checked": "check", "reopen": "check", "probe": "check",
}
UP = "clary_exporter_storage_up"
ERRORS = "clary_exporter_storage_errors_total"

# What SQLite's primary result codes mean to an operator (the extended code's first two parts).
_SQLITE_CAUSES = {
    "SQLITE_READONLY": "read-only (a read-only file system, or a file that cannot be written)",
    "SQLITE_FULL": "disk full",
    "SQLITE_BUSY": "locked by another process",
    "SQLITE_LOCKED": "locked",
    "SQLITE_NOTADB": "not a SQLite database (corrupt, or another kind of file)",
    "SQLITE_CORRUPT": "the database is corrupt",
    "SQLITE_CANTOPEN": "cannot open the file",
    "SQLITE_IOERR": "I/O error",
    "SQLITE_PERM": "permission denied",
}


class StorageError(Exception):
    """Storage that cannot be used at start, or by ``purge``: its message is one line naming the path."""


class StorageUnavailable(sqlite3.OperationalError):
    """A store operation failed while running (disk full, read-only, locked, file deleted or replaced).

    A ``sqlite3.OperationalError``, so that code written to catch SQLite's
    errors (``except sqlite3.Error``) keeps catching it.
    """

    def __init__(self, operation: str, cause: str):
        super().__init__(f"storage unavailable ({operation}): {cause}")
        self.operation = operation
        self.cause = cause


def describe(exc: BaseException) -> str:
    """One line saying what went wrong with a file or database operation, without a traceback."""
    if isinstance(exc, StorageUnavailable):
        return exc.cause
    if isinstance(exc, OSError):
        reason = exc.strerror or type(exc).__name__
        return f"{reason}: {exc.filename}" if exc.filename else reason
    text = (str(exc).splitlines() or [""])[0][:200]
    if isinstance(exc, psycopg.Error):  # PostgreSQL: its message names the server, never the password
        return text or (exc.sqlstate or type(exc).__name__)
    if isinstance(exc, sqlite3.Error):
        code = "_".join((getattr(exc, "sqlite_errorname", None) or "").split("_")[:2])
        cause = _SQLITE_CAUSES.get(code)
        if cause and text and cause != text:
            return f"{cause} ({text})"
        return cause or text or code
    return f"{type(exc).__name__}: {text}"


class StorageHealth:
    """Up or down, why, and failures per operation; the collector of the two storage families.

    Down on the first failed operation; up again only when a re-check
    succeeds (``recovered``), so one lucky read does not hide a disk that
    cannot be written. A transition is logged once, never each failure: a
    full disk under load would otherwise write a line per request.
    """

    def __init__(self, location: str | Path):
        self.location = str(location)  # a file, or a database URL without its password
        self.reason: str | None = None
        operations = spec(ERRORS).labels[0].values or ()
        self.errors: dict[str, int] = dict.fromkeys(operations, 0)
        self._lock = threading.Lock()

    @property
    def up(self) -> bool:
        return self.reason is None

    def failed(self, method: str, exc: BaseException) -> StorageUnavailable:
        """Record a failure of ``method``; the exception to raise for it."""
        operation = OPERATIONS.get(method, "other")
        cause = describe(exc)
        with self._lock:
            self.errors[operation] = self.errors.get(operation, 0) + 1
            was_up, self.reason = self.reason is None, cause
        if was_up:
            log.error("storage unavailable; the API answers 503 and /readyz is not ready until it works again",
                      extra={"fields": {"path": self.location, "operation": operation, "error": cause}})
        return StorageUnavailable(operation, cause)

    def still_down(self, cause: str) -> None:
        """A re-check failed: keep the newest reason (counted like any failure)."""
        with self._lock:
            self.errors["check"] = self.errors.get("check", 0) + 1
            self.reason = cause

    def recovered(self) -> None:
        with self._lock:
            was_down, self.reason = self.reason is not None, None
        if was_down:
            log.info("storage available again", extra={"fields": {"path": self.location}})

    def collect(self):
        up = new_family(UP)
        up.add_metric([], 1.0 if self.reason is None else 0.0)
        errors = new_family(ERRORS)
        for operation, count in self.errors.items():
            errors.add_metric([operation], count)
        return [up, errors]
