"""The cross-replica dedupe window in the shared store (table ``seen_events``, schema 6).

Each replica writes a digest of the ids of each batch it accepted (never the
raw ids: they are client-chosen strings) and tails the rows the other replicas
wrote, so a batch retried against another replica is recognised there
(``exporter.api.shared_dedupe``). Plain functions over a ``Database``, run on
a store thread (``Store.run``). Used on PostgreSQL only: on SQLite there is
one replica and its in-process window is the whole truth.

One row per replica per tick, not per batch: the digests accepted since the
last tick are packed into one BLOB (fixed width, concatenated; at most
:data:`ROW_DIGESTS` a row). No unique index and no ON CONFLICT: a digest in
two replicas' rows is harmless, and the server's work per event is a few
bytes copied (a row and an index entry per event cost it ~10 µs an event).
"""

from __future__ import annotations

from collections.abc import Sequence

ROW_DIGESTS = 20_000  # digests per row at most (a 240 kB value with 12-byte digests)


def record(db, digests: bytes, width: int, replica: str, now: float) -> int:
    """Store the digests (concatenated, ``width`` bytes each) in rows of at most :data:`ROW_DIGESTS`; how many rows."""
    step = ROW_DIGESTS * width
    chunks = [digests[i:i + step] for i in range(0, len(digests), step)]
    if chunks:
        db.connection().execute(
            "INSERT INTO seen_events (replica, seen_at, digests) VALUES " + ", ".join(["(?, ?, ?)"] * len(chunks)),
            [value for chunk in chunks for value in (replica, now, chunk)])
    return len(chunks)


def _gaps(after: int, seqs: list[int]) -> list[tuple[int, int]]:
    """The (first, last) ranges missing from the ascending ``seqs`` read after ``after``."""
    gaps, previous = [], after
    for seq in seqs:
        if seq > previous + 1:
            gaps.append((previous + 1, seq - 1))
        previous = seq
    return gaps


def tail(db, after: int, replica: str, limit: int) -> tuple[int, int, bytes, list[tuple[int, int]]]:
    """The next ``limit`` rows after seq ``after``: (rows, last seq, other replicas' digests concatenated, gaps).

    Gaps are the (first, last) seq ranges missing between ``after`` and the
    last seq read: a transaction not committed yet (or rolled back).
    """
    rows = db.connection().execute(
        "SELECT seq, CASE WHEN replica <> ? THEN digests END FROM seen_events WHERE seq > ? ORDER BY seq LIMIT ?",
        (replica, after, limit)).fetchall()
    seqs = [int(seq) for seq, _ in rows]
    return len(rows), (seqs[-1] if seqs else after), b"".join(bytes(d) for _, d in rows if d), _gaps(after, seqs)


def recheck(db, ranges: Sequence[tuple[int, int]], replica: str) -> tuple[list[int], bytes]:
    """In the (first, last) seq ranges: the seqs present now, and other replicas' digests among them."""
    if not ranges:
        return [], b""
    where = " OR ".join(["seq BETWEEN ? AND ?"] * len(ranges))
    rows = db.connection().execute(
        f"SELECT seq, CASE WHEN replica <> ? THEN digests END FROM seen_events WHERE {where}",
        [replica] + [bound for pair in ranges for bound in pair]).fetchall()
    return [int(seq) for seq, _ in rows], b"".join(bytes(d) for _, d in rows if d)


def exchange(db, digests: bytes, width: int, replica: str, now: float, after: int,
             ranges: Sequence[tuple[int, int]], limit: int, pages: int):
    """One tick in one store call: record ``digests``, read the tail after ``after`` (pages of ``limit`` rows), re-read gaps.

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
    return after, b"".join(learnt), gaps, present


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
