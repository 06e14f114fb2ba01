"""The cross-replica dedupe window in the shared store (table ``seen_events``, schema 6).

Each replica writes the hashed ids of the events it accepted (never the raw
ids: they are client-chosen strings) and tails the rows the other replicas
wrote, so a batch retried against another replica is recognised there
(``exporter.api.shared_dedupe``). Plain functions over a ``Database``, run on
a store thread (``Store.run``). PostgreSQL only (string_agg, generate_series):
on SQLite there is one replica and its in-process window is the whole truth.

Digests travel as one string of fixed-width bytes (written) or hex (read),
split and joined by the server: per row, no Python object is built on
either side (a row-per-parameter INSERT cost ~8x the events path itself).
"""

from __future__ import annotations

from collections.abc import Sequence


def record(db, digests: bytes, width: int, replica: str, now: float) -> None:
    """Insert the digests (concatenated, ``width`` bytes each) not stored yet, as hex, in one statement.

    Sorted: two replicas inserting overlapping sets in the same order
    cannot deadlock on the unique index (opposite orders can). Bytes, not
    text: substr on a long text is linear in the offset, so quadratic here.
    """
    db.connection().execute(
        "INSERT INTO seen_events (id_hash, replica, seen_at)"
        " SELECT DISTINCT encode(substring(CAST(? AS BYTEA) FROM n * ? + 1 FOR ?), 'hex'), ?, ?"
        " FROM generate_series(0, ? - 1) AS n ORDER BY 1 ON CONFLICT (id_hash) DO NOTHING",
        (digests, width, width, replica, now, len(digests) // width))


def tail(db, after: int, replica: str, limit: int) -> tuple[int, int, str, list[tuple[int, int]]]:
    """The next ``limit`` rows after seq ``after``: (rows, last seq, other replicas' digests concatenated, gaps).

    Gaps are the (first, last) seq ranges missing between ``after`` and the
    last seq read: a transaction not committed yet, or seqs ON CONFLICT spent.
    """
    row = db.connection().execute(
        "WITH page AS (SELECT seq, replica, id_hash FROM seen_events WHERE seq > ? ORDER BY seq LIMIT ?),"
        " holes AS (SELECT lag(seq, 1, ?) OVER (ORDER BY seq) + 1 AS first, seq - 1 AS last FROM page)"
        " SELECT (SELECT count(*) FROM page), (SELECT max(seq) FROM page),"
        " (SELECT string_agg(id_hash, '' ORDER BY seq) FROM page WHERE replica <> ?),"
        " (SELECT string_agg(first || ':' || last, ',') FROM holes WHERE last >= first)",
        (after, limit, after, replica)).fetchone()
    gaps = [tuple(map(int, pair.split(":"))) for pair in row[3].split(",")] if row[3] else []
    return int(row[0]), int(row[1] if row[1] is not None else after), row[2] or "", gaps


def recheck(db, ranges: Sequence[tuple[int, int]], replica: str) -> tuple[list[int], str]:
    """In the (first, last) seq ranges: the seqs present now, and other replicas' digests among them."""
    if not ranges:
        return [], ""
    where = " OR ".join(["seq BETWEEN ? AND ?"] * len(ranges))
    rows = db.connection().execute(f"SELECT seq, replica, id_hash FROM seen_events WHERE {where}",
                                   [bound for pair in ranges for bound in pair]).fetchall()
    return [seq for seq, _, _ in rows], "".join(digest for _, owner, digest in rows if owner != replica)


def exchange(db, digests: bytes, width: int, replica: str, now: float, after: int,
             ranges: Sequence[tuple[int, int]], limit: int, pages: int):
    """One tick in one store call: record ``digests``, read the tail after ``after`` (pages of ``limit``), re-read gaps.

    Returns (last seq read, digests learnt, gaps found, seqs present in ``ranges``).
    """
    if digests:
        record(db, digests, width, replica, now)
    learnt, gaps = [], []
    for _ in range(pages):
        count, after, page, holes = tail(db, after, replica, limit)
        learnt.append(page)
        gaps += holes
        if count < limit:
            break
    present, found = recheck(db, ranges, replica)
    learnt.append(found)
    return after, "".join(learnt), gaps, present


def start(db, since: float) -> int:
    """The seq to tail after: just before the first row seen since ``since`` (or the last seq)."""
    row = db.connection().execute("SELECT MIN(seq) FROM seen_events WHERE seen_at >= ?", (since,)).fetchone()
    if row[0] is not None:
        return int(row[0]) - 1
    row = db.connection().execute("SELECT MAX(seq) FROM seen_events").fetchone()
    return int(row[0] or 0)


def purge(db, before: float) -> int:
    """Delete rows seen before ``before`` (older than the dedupe window's TTL); how many."""
    cursor = db.connection().execute("DELETE FROM seen_events WHERE seen_at < ?", (before,))
    return max(cursor.rowcount, 0)
