"""Versioned steps that bring an older database file up to ``SCHEMA_VERSION``.

``exporter.store.schema.connect`` creates missing tables with ``IF NOT
EXISTS``; a step here does what that cannot: add columns to a table that
exists, and fill them for the rows already stored. Each step is idempotent
(a column is added only if missing, a row filled only if still empty), so a
step interrupted by a crash simply runs again at the next start: the
version is raised only after every step has finished.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

from exporter.instrument.sentiment import score

log = logging.getLogger(__name__)

BACKFILL_BATCH = 500
"""Rows scored per transaction while back-filling sentiment (a lock is never held for long)."""


def migrate(conn: sqlite3.Connection, version: int) -> None:
    """Run every step above ``version`` (the file's ``user_version``), oldest first."""
    for target, step in STEPS:
        if version < target:
            step(conn)


def feedback_analysis(conn: sqlite3.Connection) -> None:
    """Version 4: ``feature`` and ``sentiment`` on feedback rows; sentiment back-filled from the text."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(feedback)")}
        for name, kind in (("feature", "TEXT"), ("sentiment", "REAL")):
            if name not in columns:
                conn.execute(f"ALTER TABLE feedback ADD COLUMN {name} {kind}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    filled = backfill_sentiment(conn)
    if filled:
        log.info("feedback sentiment back-filled", extra={"fields": {"rows": filled}})


def backfill_sentiment(conn: sqlite3.Connection, batch: int = BACKFILL_BATCH) -> int:
    """Score every stored text that has no sentiment yet, ``batch`` rows per transaction; rows scored."""
    last, filled = 0, 0
    while True:
        rows = conn.execute(
            "SELECT seq, text FROM feedback WHERE seq > ? AND sentiment IS NULL AND text != '' ORDER BY seq LIMIT ?",
            (last, batch)).fetchall()
        if not rows:
            return filled
        scored = [(score(text), seq) for seq, text in rows]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("UPDATE feedback SET sentiment = ? WHERE seq = ? AND sentiment IS NULL", scored)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        filled += sum(value is not None for value, _ in scored)
        last = rows[-1][0]


STEPS: tuple[tuple[int, Callable[[sqlite3.Connection], None]], ...] = (
    (4, feedback_analysis),
)
