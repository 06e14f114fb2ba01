"""The privacy change feed: how an opt-out, a consent or a deletion made on one replica reaches the others.

``privacy_changes`` (schema 6) gets one row per user hash affected, written
by ``Database.set_opt_out``, ``record_consent`` and ``delete_user`` in the
same transaction as the change itself, so a committed change always has its
row and a rolled-back one never does. Every replica polls the rows past the
last ``seq`` it applied (``exporter.api.privacy_sync``) and applies them to
its in-memory sets.

Rows are appended in commit order: on PostgreSQL the append takes a
transaction-scoped advisory lock as the transaction's last statement, so no
transaction can commit a smaller ``seq`` after a reader has seen a larger
one (a reader following ``seq > last`` would skip it for good). On SQLite,
``BEGIN IMMEDIATE`` already serialises writers.

Rows are kept ``HORIZON_SECONDS`` (``purge``, from ``Database.purge``): a
replica that was down longer reloads the full sets at start anyway
(``exporter.api.storage``).

Plain functions over a connection or a ``Database`` (as ``exporter.store.errors``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from exporter.store import errors
from exporter.store.sql import in_list

HORIZON_SECONDS = 3600.0
CHANGES = ("opt_out", "opt_in", "consent_granted", "consent_withdrawn", "deleted")
FEED_LOCK = 0x636C617279_02  # pg_advisory_xact_lock key: appends commit in seq order
READ_LIMIT = 1000  # rows per read; a longer backlog is read by the next polls


class Change(NamedTuple):
    seq: int
    user_hash: str
    change: str


def append(conn: Any, user_hashes: Iterable[str], change: str, now: float) -> None:
    """One row per hash, in the caller's transaction; call it last in that transaction (the lock is held to commit)."""
    if change not in CHANGES:
        raise ValueError(change)
    rows = [(user_hash, change, now) for user_hash in user_hashes]
    if not rows:
        return
    if getattr(conn, "dialect", "sqlite") == "postgresql":
        conn.execute("SELECT pg_advisory_xact_lock(?)", (FEED_LOCK,))
    conn.executemany("INSERT INTO privacy_changes (user_hash, change, created_at) VALUES (?, ?, ?)", rows)


def since(db: Any, seq: int, limit: int = READ_LIMIT) -> list[Change]:
    """The changes after ``seq``, oldest first (at most ``limit``)."""
    conn = db.connection(create=False)
    if conn is None:
        return []
    return [Change(int(row[0]), row[1], row[2]) for row in conn.execute(
        "SELECT seq, user_hash, change FROM privacy_changes WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))]


def latest(db: Any) -> int:
    """The last ``seq`` written (0: none): a replica starting now follows the feed from there."""
    conn = db.connection(create=False)
    if conn is None:
        return 0
    return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM privacy_changes").fetchone()[0])


def purge(conn: Any, now: float, horizon: float = HORIZON_SECONDS) -> int:
    """Delete rows older than the horizon (in the caller's transaction); the number of rows."""
    return conn.execute("DELETE FROM privacy_changes WHERE created_at < ?", (now - horizon,)).rowcount


def erase_late_rows(db: Any, user_hashes: Iterable[str]) -> int:
    """Delete the users' activity and error records again: rows a replica was writing when the deletion committed.

    Applied by each replica to a ``deleted`` change, after its own buffered
    rows were dropped and its in-flight write finished; the number of rows.
    """
    hashes = tuple(user_hashes)
    with db.transaction() as conn:
        activity = conn.execute(f"DELETE FROM activity WHERE {in_list('user_hash', hashes)}", hashes).rowcount
        return activity + errors.delete_user(conn, hashes)
