"""The storage checks: at start, for ``clary-exporter purge``, and again while storage is down.

:func:`open_checked` creates the data dir, opens the database (creating it
at start, so a disk problem is found when the exporter starts rather than by
the first user who sends feedback), runs ``PRAGMA quick_check``, reconciles
the HMAC secret's fingerprint (``exporter.store.secrets``) and commits one
small write. Whatever fails is a :class:`StorageError` naming the path and
the cause in one line; the CLI prints it and exits 2.

:func:`reopen` is the re-check of a store that failed while running: a file
replaced by a restored backup is opened afresh; a deleted one is not
recreated (an empty database would drop the opt-outs it held), it stays down
until the file is back or the exporter restarts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from exporter.store.database import STORAGE_ERRORS, Database
from exporter.store.health import StorageError, describe
from exporter.store.secrets import Secrets, reconcile

# SQLite result codes that mean the file itself is damaged, not the disk or a lock.
_DAMAGED = ("SQLITE_NOTADB", "SQLITE_CORRUPT")
_DAMAGED_FIX = "restore it from a backup, or move it away to start with an empty one"


def ensure_dir(directory: Path, create: bool) -> None:
    """The data dir exists as a directory (created when ``create``), or StorageError says why not."""
    try:
        if directory.is_dir():
            if not os.access(directory, os.W_OK | os.X_OK):  # SQLite writes its -wal and -shm files there
                raise StorageError(f"data dir {directory} is not writable (a read-only file system, or permissions)")
            return
        if directory.exists() or directory.is_symlink():
            raise StorageError(f"data dir {directory} is not a directory")
        for parent in directory.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise StorageError(f"data dir {directory}: {parent} is a file, not a directory")
                break
        if not create:
            raise StorageError(f"data dir {directory} does not exist")
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"data dir {directory}: {describe(exc)}") from None


def open_checked(db: Database, create: bool = True, integrity: bool = True, secrets: Secrets | None = None,
                 now: float | None = None) -> list[str]:
    """Check that ``db`` can be used and leave it open; returns lines to log (a secret rotated).

    SQLite: ``create``: create the data dir and the file when missing (the
    exporter's start), or refuse (``purge``, a re-check). ``integrity``:
    ``PRAGMA quick_check`` (reads the whole file: at start and for purge).
    PostgreSQL: connect afresh (which migrates); nothing to create or check on
    disk, the database is the server's. Then, on both: the secret, one
    committed write.
    """
    try:
        if db.url:
            db.close()
            db.connection()
        else:
            _open_file(db, create, integrity)
        now = time.time() if now is None else now
        notes: list[str] = []
        if secrets is not None:
            with db.transaction() as conn:
                notes = reconcile(conn, db.location, secrets, now)
        db.probe(now)
        return notes
    except StorageError:
        db.close()
        raise
    except STORAGE_ERRORS as exc:
        db.close()
        damaged = (getattr(exc, "sqlite_errorname", None) or "").startswith(_DAMAGED)
        raise StorageError(f"{db.location}: {describe(exc)}" + (f": {_DAMAGED_FIX}" if damaged else "")) from None


def _open_file(db: Database, create: bool, integrity: bool) -> None:
    """The SQLite part of :func:`open_checked`: the data dir, the file, its quick check."""
    path = db.path
    ensure_dir(path.parent, create)
    if path.is_dir():
        raise StorageError(f"{path} is a directory, not a database file")
    if not create and not path.exists():
        raise StorageError(f"no database at {path}: is the data dir right?")
    conn = db.connection(create=True)
    if integrity:
        problems = [" ".join(str(row[0]).split()) for row in conn.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:  # one line, whatever SQLite's report looks like
            raise StorageError(f"{path}: the database is corrupt ({'; '.join(problems)[:200]}): {_DAMAGED_FIX}")


def reopen(db: Database, secrets: Secrets | None = None, now: float | None = None) -> tuple[list[str], set[str]]:
    """The re-check of a store that failed: open the file (or connect) again and check it; (lines to log, its opt-outs)."""
    db.close()
    notes = open_checked(db, create=False, integrity=False, secrets=secrets, now=now)
    return notes, db.opted_out()
