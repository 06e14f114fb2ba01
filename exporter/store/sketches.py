"""Distinct-count sketches that replicas share through the store (table ``sketches``, schema 6).

One row per (kind, tier, bucket size, slot, replica): the replica's
serialized HyperLogLog of that bucket (hashed ids only, never raw ones).
Each replica upserts its own rows and reads the others'
(``exporter.api.shared_sketches``); rows older than the longest
window are deleted by whichever replica gets there first.

Every function takes a ``Database`` and runs on a store thread (``Store.run``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Row = tuple[str, str, int, int, str, bytes]  # kind, tier, size, slot, replica, data


def put(db, replica: str, rows: Iterable[tuple[str, str, int, int, bytes]]) -> int:
    """Upsert this replica's buckets (kind, tier, size, slot, data); how many were written."""
    rows = [(kind, tier, size, slot, replica, bytes(data)) for kind, tier, size, slot, data in rows]
    if rows:
        with db.transaction() as conn:
            conn.executemany(
                "INSERT INTO sketches (kind, tier, size, slot, replica, data) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (kind, tier, size, slot, replica) DO UPDATE SET data = excluded.data", rows)
    return len(rows)


def since(db, oldest: Mapping[tuple[str, int], int], exclude: str | None = None) -> list[Row]:
    """Every replica's rows (but ``exclude``'s) of each (kind, size) from slot ``oldest[kind, size]`` on."""
    conn = db.connection(create=False)
    if conn is None:
        return []
    found: list[Row] = []
    for (kind, size), slot in oldest.items():
        found += [(k, tier, s, sl, rep, bytes(data)) for k, tier, s, sl, rep, data in conn.execute(
            "SELECT kind, tier, size, slot, replica, data FROM sketches"
            " WHERE kind = ? AND size = ? AND slot >= ? AND replica <> ?",
            (kind, size, slot, exclude or "")).fetchall()]
    return found


def expire(db, before: Mapping[tuple[str, int], int]) -> int:
    """Delete every replica's rows of each (kind, size) older than slot ``before[kind, size]``."""
    conn = db.connection(create=False)
    if conn is None:
        return 0
    removed = 0
    with db.transaction() as conn:
        for (kind, size), slot in before.items():
            removed += conn.execute("DELETE FROM sketches WHERE kind = ? AND size = ? AND slot < ?",
                                    (kind, size, slot)).rowcount
    return removed


def exchange(db, replica: str, rows: Iterable[tuple[str, str, int, int, bytes]],
             oldest: Mapping[tuple[str, int], int], expire_before: Mapping[tuple[str, int], int]) -> list[Row]:
    """One tick of a replica: publish its rows, drop expired ones, read the other replicas' (``since``)."""
    put(db, replica, rows)
    expire(db, expire_before)
    return since(db, oldest, exclude=replica)
