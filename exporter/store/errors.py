"""Error records and their groups in the store: lookup by error id, groups ranked by impact.

- ``error_records``: one row per occurrence (error id, fingerprint, time,
  tier, route, type, hashed user, redacted message and trace). Retention and
  user deletion remove rows here like feedback (``Database.purge``,
  ``Database.delete_user``).
- ``error_groups``: one row per fingerprint (``exporter.instrument.error_report``):
  first and last seen, count of occurrences ever, status ``open``,
  ``resolved`` or ``regressed`` (seen again after it was resolved). Users,
  tiers and routes affected are read from the retained records, so a
  deleted user no longer counts and nothing personal lives in the group.

Every function takes a ``Database`` and runs on the store thread
(``Store.run``); the tables are created with the others
(``exporter.store.schema``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.store.sql import in_list, where

SCHEMA = """
CREATE TABLE IF NOT EXISTS error_groups (
    fingerprint TEXT PRIMARY KEY,
    error_type  TEXT NOT NULL,
    first_seen  REAL NOT NULL,
    last_seen   REAL NOT NULL,
    count       INTEGER NOT NULL,
    status      TEXT NOT NULL,
    resolved_at REAL,
    message     TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS error_records (
    error_id    TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    created_at  REAL NOT NULL,
    tier        TEXT NOT NULL,
    route       TEXT NOT NULL,
    error_type  TEXT NOT NULL,
    user_hash   TEXT,
    message     TEXT NOT NULL,
    trace       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS error_records_group ON error_records (fingerprint, created_at);
CREATE INDEX IF NOT EXISTS error_records_created ON error_records (created_at);
CREATE INDEX IF NOT EXISTS error_records_user ON error_records (user_hash) WHERE user_hash IS NOT NULL;
"""

STATUSES = ("open", "resolved", "regressed")
RECORD_COLUMNS = ("error_id", "fingerprint", "created_at", "tier", "route", "error_type", "user_hash", "message",
                  "trace")
MAX_ROUTES = 10  # routes listed per group, most frequent first


@dataclass(frozen=True)
class ErrorRecord:
    error_id: str
    fingerprint: str
    created_at: float
    tier: str
    route: str
    error_type: str
    user_hash: str | None
    message: str
    trace: str


@dataclass(frozen=True)
class GroupChange:
    """A group that a batch of records created (``new``) or brought back after a resolve (``regressed``)."""

    fingerprint: str
    tier: str
    change: str  # "new" or "regressed"


def add_errors(db, records: Sequence[ErrorRecord]) -> list[GroupChange]:
    """Store records (a known error id is skipped) and update their groups in one transaction."""
    changes: list[GroupChange] = []
    with db.transaction() as conn:
        for rec in records:
            inserted = conn.execute(
                "INSERT INTO error_records (" + ", ".join(RECORD_COLUMNS) + ")"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                tuple(getattr(rec, name) for name in RECORD_COLUMNS)).rowcount
            if not inserted:
                continue
            row = conn.execute("SELECT status, resolved_at FROM error_groups WHERE fingerprint = ?",
                               (rec.fingerprint,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO error_groups (fingerprint, error_type, first_seen, last_seen, count, status, message)"
                    " VALUES (?, ?, ?, ?, 1, 'open', ?)",
                    (rec.fingerprint, rec.error_type, rec.created_at, rec.created_at, rec.message))
                changes.append(GroupChange(rec.fingerprint, rec.tier, "new"))
                continue
            status, resolved_at = row
            regressed = status == "resolved" and rec.created_at >= (resolved_at or 0)
            conn.execute(
                "UPDATE error_groups SET count = count + 1,"
                " first_seen = CASE WHEN ? < first_seen THEN ? ELSE first_seen END,"
                " last_seen = CASE WHEN ? > last_seen THEN ? ELSE last_seen END,"
                " message = CASE WHEN ? >= last_seen THEN ? ELSE message END,"
                " status = ? WHERE fingerprint = ?",
                (rec.created_at, rec.created_at, rec.created_at, rec.created_at, rec.created_at, rec.message,
                 "regressed" if regressed else status, rec.fingerprint))
            if regressed:
                changes.append(GroupChange(rec.fingerprint, rec.tier, "regressed"))
    return changes


def resolve_group(db, fingerprint: str, now: float | None = None) -> dict[str, Any] | None:
    """Mark a group resolved (a later occurrence makes it ``regressed``); the group, or None if unknown."""
    conn = db.connection(create=False)
    if conn is None:
        return None
    with db.transaction() as conn:
        changed = conn.execute("UPDATE error_groups SET status = 'resolved', resolved_at = ? WHERE fingerprint = ?",
                               (time.time() if now is None else now, fingerprint)).rowcount
    return group(db, fingerprint) if changed else None


def lookup(db, error_id: str) -> dict[str, Any] | None:
    """The occurrence with this error id and its group, or None."""
    conn = db.connection(create=False)
    if conn is None:
        return None
    row = conn.execute("SELECT " + ", ".join(RECORD_COLUMNS) + " FROM error_records WHERE error_id = ?",
                       (error_id,)).fetchone()
    if row is None:
        return None
    record = dict(zip(RECORD_COLUMNS, row))
    return {"record": record, "group": group(db, record["fingerprint"])}


def group(db, fingerprint: str) -> dict[str, Any] | None:
    found = list_groups(db, fingerprint=fingerprint, limit=1)
    return found[0] if found else None


def list_groups(db, tier: str | None = None, status: str | None = None, route: str | None = None,
                since: float | None = None, until: float | None = None, fingerprint: str | None = None,
                limit: int = 50) -> list[dict[str, Any]]:
    """Groups, most users affected first, then most occurrences; filters as in ``GET /api/v1/errors``.

    ``tier`` and ``route`` keep groups with a retained record there; ``since``
    and ``until`` keep groups seen in that window (last seen at or after
    ``since``, first seen before ``until``).
    """
    conn = db.connection(create=False)
    if conn is None:
        return []
    filters, args = where((
        ("g.fingerprint = ?", fingerprint),
        ("g.status = ?", status),
        ("g.last_seen >= ?", since),
        ("g.first_seen < ?", until),
        ("g.fingerprint IN (SELECT fingerprint FROM error_records WHERE tier = ?)", tier),
        ("g.fingerprint IN (SELECT fingerprint FROM error_records WHERE route = ?)", route),
    ))
    sql = ("SELECT g.fingerprint, g.error_type, g.first_seen, g.last_seen, g.count, g.status, g.resolved_at,"
           " g.message, (SELECT COUNT(DISTINCT user_hash) FROM error_records r WHERE r.fingerprint = g.fingerprint)"
           " AS users FROM error_groups g" + filters + " ORDER BY users DESC, g.count DESC, g.last_seen DESC LIMIT ?")
    groups = []
    for row in conn.execute(sql, (*args, limit)).fetchall():
        item = dict(zip(("fingerprint", "error_type", "first_seen", "last_seen", "count", "status", "resolved_at",
                         "message", "users_affected"), row))
        item["tiers"] = [t for (t,) in conn.execute(
            "SELECT DISTINCT tier FROM error_records WHERE fingerprint = ? ORDER BY tier", (item["fingerprint"],))]
        item["routes"] = [r for (r,) in conn.execute(
            "SELECT route FROM error_records WHERE fingerprint = ? GROUP BY route ORDER BY COUNT(*) DESC, route"
            " LIMIT ?", (item["fingerprint"], MAX_ROUTES))]
        groups.append(item)
    return groups


def open_groups_by_tier(db) -> dict[str, int]:
    """Groups not resolved (open or regressed), per tier of their retained records: the gauge's values."""
    conn = db.connection(create=False)
    if conn is None:
        return {}
    return dict(conn.execute(
        "SELECT r.tier, COUNT(DISTINCT r.fingerprint) FROM error_records r JOIN error_groups g"
        " ON g.fingerprint = r.fingerprint WHERE g.status != 'resolved' GROUP BY r.tier").fetchall())


def top_groups(db, per_tier: int = 10) -> list[tuple[str, str, int]]:
    """(tier, fingerprint, users affected) of the ``per_tier`` groups with the most users in each tier."""
    conn = db.connection(create=False)
    if conn is None:
        return []
    rows = conn.execute(
        "SELECT tier, fingerprint, COUNT(DISTINCT user_hash) AS users, COUNT(*) AS n FROM error_records"
        " GROUP BY tier, fingerprint ORDER BY tier, users DESC, n DESC").fetchall()
    taken: dict[str, int] = {}
    top = []
    for tier, fingerprint, users, _ in rows:
        if taken.get(tier, 0) < per_tier:
            taken[tier] = taken.get(tier, 0) + 1
            top.append((tier, fingerprint, users))
    return top


def delete_user(conn, user_hashes: Iterable[str]) -> int:
    """Delete the users' error records (in the caller's transaction); the number of rows."""
    hashes = tuple(user_hashes)
    return conn.execute(f"DELETE FROM error_records WHERE {in_list('user_hash', hashes)}", hashes).rowcount


def purge(conn, cutoff: float) -> int:
    """Delete records older than ``cutoff``, and groups not seen since (in the caller's transaction)."""
    removed = conn.execute("DELETE FROM error_records WHERE created_at < ?", (cutoff,)).rowcount
    conn.execute("DELETE FROM error_groups WHERE last_seen < ?", (cutoff,))
    return removed
