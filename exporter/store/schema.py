"""The store's SQLite schema, its version, and opening a connection the way the store relies on.

- WAL journal, ``synchronous=FULL``: a commit has reached the disk when it returns.
- ``PRAGMA user_version`` is the schema version; a file written by a newer
  exporter is refused (a :class:`StorageError`, one line) rather than
  half-understood. Tables are created with ``IF NOT EXISTS``, so opening an
  older file migrates it. 2 added ``meta`` (the HMAC secret's fingerprint,
  ``exporter.store.secrets``); an exporter of version 1 refuses such a file.
  3 added ``error_records`` and ``error_groups`` (``exporter.store.errors``).
  4 added the feedback row's ``feature`` and ``sentiment`` (VADER compound
  score), back-filled for stored rows (``exporter.store.migrations``).
  5 added ``consents`` (``exporter.store.consent``).
  6 added what several replicas share (``SHARED_SCHEMA``): the privacy change
  feed, the cross-replica dedupe window and the distinct-count sketches; it is
  also the first version on PostgreSQL (``exporter.store.postgres``), whose
  databases are created at the current version.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from exporter.store import consent, errors, postgres
from exporter.store.health import StorageError
from exporter.store.migrations import migrate

SCHEMA_VERSION = 6

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    tier       TEXT NOT NULL,
    type       TEXT NOT NULL,
    rating     INTEGER NOT NULL,
    urgent     INTEGER NOT NULL,
    text       TEXT NOT NULL,
    metadata   TEXT,
    user_hash  TEXT,
    feature    TEXT,
    sentiment  REAL
);
CREATE INDEX IF NOT EXISTS feedback_created ON feedback (created_at);
CREATE INDEX IF NOT EXISTS feedback_user ON feedback (user_hash) WHERE user_hash IS NOT NULL;
CREATE TABLE IF NOT EXISTS activity (
    user_hash TEXT NOT NULL,
    day       INTEGER NOT NULL,
    tier      TEXT NOT NULL,
    kind      TEXT NOT NULL,
    count     INTEGER NOT NULL,
    PRIMARY KEY (user_hash, day, tier, kind)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS activity_day ON activity (day);
CREATE TABLE IF NOT EXISTS opt_outs (
    user_hash  TEXT PRIMARY KEY,
    created_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    feedback_id     TEXT NOT NULL,
    url             TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      REAL NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""

# Version 6: what replicas of one deployment share through the store (docs/scale-out.md).
SHARED_SCHEMA = """
CREATE TABLE IF NOT EXISTS privacy_changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    user_hash  TEXT NOT NULL,
    change     TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS privacy_changes_created ON privacy_changes (created_at);
CREATE TABLE IF NOT EXISTS seen_events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    replica  TEXT NOT NULL,
    seen_at  REAL NOT NULL,
    digests  BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS seen_events_seen ON seen_events (seen_at);
CREATE TABLE IF NOT EXISTS sketches (
    kind     TEXT NOT NULL,
    tier     TEXT NOT NULL,
    size     INTEGER NOT NULL,
    slot     INTEGER NOT NULL,
    replica  TEXT NOT NULL,
    data     BLOB NOT NULL,
    PRIMARY KEY (kind, tier, size, slot, replica)
) WITHOUT ROWID;
"""


def full_schema() -> str:
    """Every table of the current version, in SQLite's dialect (``postgres.ddl`` translates it)."""
    return SCHEMA + errors.SCHEMA + consent.SCHEMA + SHARED_SCHEMA


def file_id(path: Path) -> tuple[int, int]:
    """(device, inode) of the file at ``path``: a deleted or replaced database no longer matches."""
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def connect(path: Path, busy_timeout: float) -> tuple[sqlite3.Connection, tuple[int, int]]:
    """Open (creating the file and its directory) and migrate; the connection and the file's id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(f"{path}: schema version {version} is newer than this exporter's ({SCHEMA_VERSION}); "
                               "run the newer exporter, or restore a backup")
        conn.executescript(full_schema())
        migrate(conn, version)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return conn, file_id(path)
    except BaseException:
        conn.close()
        raise


def connect_postgres(url: str) -> postgres.Connection:
    """Connect and bring the database to ``SCHEMA_VERSION``; replicas starting together migrate it once."""
    conn = postgres.connect(url)
    try:
        conn.execute("SELECT pg_advisory_lock(?)", (postgres.SCHEMA_LOCK,))
        try:
            version = postgres.schema_version(conn)
            if version > SCHEMA_VERSION:
                raise StorageError(f"{postgres.redact(url)}: schema version {version} is newer than this exporter's "
                                   f"({SCHEMA_VERSION}); run the newer exporter on every replica")
            if version != SCHEMA_VERSION:  # a current database is left alone: the DDL would lock every table
                # (CREATE INDEX IF NOT EXISTS takes a SHARE lock), deadlocking with another connection's
                # transaction across tables (a purge) whenever a store thread connects later
                conn.executescript(postgres.ddl(full_schema()))
            # A new database is created at the current version: only later steps ever run on it.
            migrate(conn, version or SCHEMA_VERSION)
            postgres.set_schema_version(conn, SCHEMA_VERSION)
        finally:
            conn.execute("SELECT pg_advisory_unlock(?)", (postgres.SCHEMA_LOCK,))
        return conn
    except BaseException:
        conn.close()
        raise
