"""Durable state of the ingestion API: feedback, per-user activity, opt-outs
and the webhook outbox, in one SQLite file under ``--data-dir``.

- WAL journal, ``synchronous=FULL``: a write has reached the disk when its
  commit returns, and the API answers 201 only after that.
- User ids are stored only as their HMAC (``Hasher.digest``); the store
  never sees a raw id. An opted-out user's feedback has no user at all.
- Urgent-feedback notifications are written to the ``outbox`` table in the
  same transaction as the feedback, so a delivery survives a crash or a
  receiver that is down; ``exporter.api.notify`` drains it.
- Retention (``purge``) and user deletion (``delete_user``) remove rows and
  return exact counts per table.

All SQL runs on one dedicated thread (``Store``), so the event loop never
waits on the disk. ``Database`` is the synchronous core, used by that thread,
by ``clary-exporter purge`` and by tests that inspect rows.

The file is created on the first write, not at start-up: an exporter that
never receives feedback or user activity leaves no file behind.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DB_FILENAME = "clary.db"
SCHEMA_VERSION = 1
DAY = 86400

_SCHEMA = """
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
    user_hash  TEXT
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
"""

FEEDBACK_COLUMNS = ("id", "created_at", "tier", "type", "rating", "urgent", "text", "metadata", "user_hash")


@dataclass(frozen=True)
class FeedbackRecord:
    tier: str
    type: str
    rating: int
    text: str
    metadata: Mapping[str, Any] | None
    user_hash: str | None
    urgent: bool
    created_at: float
    id: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FEEDBACK_COLUMNS}


@dataclass(frozen=True)
class Delivery:
    id: int
    feedback_id: str
    url: str
    payload: str
    attempts: int


def new_feedback_id() -> str:
    return str(uuid.uuid4())


class Database:
    """Synchronous SQLite access; one instance per thread that uses it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    # --- connection ----------------------------------------------------------

    def connection(self, create: bool = True) -> sqlite3.Connection | None:
        """The open connection; None when the file does not exist and ``create`` is off."""
        if self._conn is not None:
            return self._conn
        if not create and not self.path.exists():
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            conn.close()
            raise RuntimeError(f"{self.path}: schema version {version} is newer than this exporter ({SCHEMA_VERSION})")
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _write(self):
        return _Transaction(self.connection(create=True))

    # --- feedback --------------------------------------------------------------

    def add_feedback(self, record: FeedbackRecord, deliveries: Iterable[tuple[str, str]] = ()) -> FeedbackRecord:
        """Insert one feedback row and its outbox rows (url, payload) atomically."""
        if not record.id:
            record = FeedbackRecord(**{**record.__dict__, "id": new_feedback_id()})
        with self._write() as conn:
            conn.execute(
                "INSERT INTO feedback (id, created_at, tier, type, rating, urgent, text, metadata, user_hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.id, record.created_at, record.tier, record.type, record.rating, int(record.urgent),
                 record.text, json.dumps(record.metadata, separators=(",", ":")) if record.metadata is not None
                 else None, record.user_hash),
            )
            conn.executemany(
                "INSERT INTO outbox (feedback_id, url, payload, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?)",
                [(record.id, url, payload, record.created_at, record.created_at) for url, payload in deliveries],
            )
        return record

    def list_feedback(
        self,
        tier: str | None = None,
        type: str | None = None,
        since: float | None = None,
        limit: int = 50,
        before_seq: int | None = None,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first; returns (rows, cursor for the next page or None)."""
        conn = self.connection(create=False)
        if conn is None:
            return [], None
        where, args = [], []
        for column, value in (("tier", tier), ("type", type)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("created_at >= ?")
            args.append(since)
        if before_seq is not None:
            where.append("seq < ?")
            args.append(before_seq)
        sql = "SELECT seq, " + ", ".join(FEEDBACK_COLUMNS) + " FROM feedback"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        rows = conn.execute(sql, (*args, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        result = [self._feedback_row(row[1:]) for row in rows]
        return result, (rows[-1][0] if more and rows else None)

    @staticmethod
    def _feedback_row(row: tuple) -> dict[str, Any]:
        item = dict(zip(FEEDBACK_COLUMNS, row))
        item["urgent"] = bool(item["urgent"])
        item["metadata"] = json.loads(item["metadata"]) if item["metadata"] is not None else None
        return item

    def count(self, table: str, where: str = "1", args: tuple = ()) -> int:
        if table not in ("feedback", "activity", "opt_outs", "outbox"):
            raise ValueError(table)
        conn = self.connection(create=False)
        if conn is None:
            return 0
        return conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}", args).fetchone()[0]

    # --- per-user activity -----------------------------------------------------------

    def add_activity(self, counts: Mapping[tuple[str, int, str, str], int]) -> None:
        """Add (user_hash, day, tier, kind) -> count to the daily activity rows."""
        if not counts:
            return
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO activity (user_hash, day, tier, kind, count) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (user_hash, day, tier, kind) DO UPDATE SET count = count + excluded.count",
                [(*key, n) for key, n in counts.items()],
            )

    def activity(self, user_hash: str | None = None) -> list[tuple[str, int, str, str, int]]:
        conn = self.connection(create=False)
        if conn is None:
            return []
        sql = "SELECT user_hash, day, tier, kind, count FROM activity"
        args: tuple = ()
        if user_hash is not None:
            sql += " WHERE user_hash = ?"
            args = (user_hash,)
        return conn.execute(sql + " ORDER BY user_hash, day, tier, kind", args).fetchall()

    # --- privacy operations ---------------------------------------------------------

    def delete_user(self, user_hash: str) -> dict[str, int]:
        """Remove every stored record of one user: feedback, its pending notifications, activity.

        The opt-out row stays: deleting a user's data must not start tracking them again.
        """
        conn = self.connection(create=False)
        if conn is None:
            return {"feedback": 0, "notifications": 0, "activity": 0}
        with _Transaction(conn):
            notifications = conn.execute(
                "DELETE FROM outbox WHERE feedback_id IN (SELECT id FROM feedback WHERE user_hash = ?)", (user_hash,)
            ).rowcount
            feedback = conn.execute("DELETE FROM feedback WHERE user_hash = ?", (user_hash,)).rowcount
            activity = conn.execute("DELETE FROM activity WHERE user_hash = ?", (user_hash,)).rowcount
        return {"feedback": feedback, "notifications": notifications, "activity": activity}

    def purge(self, retention_days: int, now: float | None = None) -> dict[str, int]:
        """Delete feedback, its pending notifications and activity older than the retention."""
        conn = self.connection(create=False)
        if conn is None:
            return {"feedback": 0, "notifications": 0, "activity": 0}
        cutoff = (time.time() if now is None else now) - retention_days * DAY
        with _Transaction(conn):
            notifications = conn.execute(
                "DELETE FROM outbox WHERE feedback_id IN (SELECT id FROM feedback WHERE created_at < ?)"
                " OR created_at < ?", (cutoff, cutoff)
            ).rowcount
            feedback = conn.execute("DELETE FROM feedback WHERE created_at < ?", (cutoff,)).rowcount
            # A day's row is older than the cutoff once the whole day is.
            activity = conn.execute("DELETE FROM activity WHERE (day + 1) * ? <= ?", (DAY, cutoff)).rowcount
        return {"feedback": feedback, "notifications": notifications, "activity": activity}

    def set_opt_out(self, user_hash: str, opted_out: bool, now: float | None = None) -> bool:
        """Persist the choice; returns whether anything changed."""
        if opted_out:
            with self._write() as conn:
                return conn.execute(
                    "INSERT OR IGNORE INTO opt_outs (user_hash, created_at) VALUES (?, ?)",
                    (user_hash, time.time() if now is None else now),
                ).rowcount == 1
        conn = self.connection(create=False)
        if conn is None:
            return False
        with _Transaction(conn):
            return conn.execute("DELETE FROM opt_outs WHERE user_hash = ?", (user_hash,)).rowcount == 1

    def opted_out(self) -> set[str]:
        conn = self.connection(create=False)
        if conn is None:
            return set()
        return {row[0] for row in conn.execute("SELECT user_hash FROM opt_outs")}

    # --- webhook outbox ------------------------------------------------------------

    def due_deliveries(self, now: float, limit: int = 50) -> list[Delivery]:
        conn = self.connection(create=False)
        if conn is None:
            return []
        rows = conn.execute(
            "SELECT id, feedback_id, url, payload, attempts FROM outbox WHERE next_attempt_at <= ?"
            " ORDER BY next_attempt_at, id LIMIT ?", (now, limit)
        ).fetchall()
        return [Delivery(*row) for row in rows]

    def next_delivery_at(self) -> float | None:
        conn = self.connection(create=False)
        if conn is None:
            return None
        return conn.execute("SELECT MIN(next_attempt_at) FROM outbox").fetchone()[0]

    def record_deliveries(self, done: Iterable[int] = (),
                          failed: Iterable[tuple[int, int, float, str]] = ()) -> None:
        """Outcomes of delivery attempts, in one transaction: ``done`` rows (ids) are deleted,
        ``failed`` ones get (id, attempts so far, next attempt time, error)."""
        with self._write() as conn:
            conn.executemany("DELETE FROM outbox WHERE id = ?", [(delivery_id,) for delivery_id in done])
            conn.executemany(
                "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?",
                [(attempts, next_at, error[:500], delivery_id) for delivery_id, attempts, next_at, error in failed],
            )

    def resume_deliveries(self, urls: Iterable[str], now: float) -> tuple[int, int]:
        """At start-up: pending deliveries to configured URLs become due now; others are dropped.

        Returns (resumed, dropped).
        """
        conn = self.connection(create=False)
        if conn is None:
            return 0, 0
        urls = list(urls)
        marks = ",".join("?" * len(urls))
        with _Transaction(conn):
            keep = f"url IN ({marks})" if urls else "0"
            dropped = conn.execute(f"DELETE FROM outbox WHERE NOT ({keep})", urls).rowcount
            resumed = conn.execute(
                f"UPDATE outbox SET next_attempt_at = ? WHERE {keep}", (now, *urls)
            ).rowcount
        return resumed, dropped

    def outbox(self) -> list[tuple]:
        conn = self.connection(create=False)
        if conn is None:
            return []
        return conn.execute(
            "SELECT id, feedback_id, url, attempts, next_attempt_at, last_error FROM outbox ORDER BY id"
        ).fetchall()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


class Store:
    """Async façade: every ``Database`` call runs on one dedicated thread."""

    def __init__(self, data_dir: Path, filename: str = DB_FILENAME):
        self.path = Path(data_dir) / filename
        self.db = Database(self.path)
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clary-store")
            return self._executor

    async def call(self, method: str, *args, **kwargs):
        func = getattr(self.db, method)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), lambda: func(*args, **kwargs))

    def __getattr__(self, name: str):
        # store.add_feedback(...) etc. as coroutines on the store thread.
        if name.startswith("_") or not callable(getattr(Database, name, None)):
            raise AttributeError(name)

        async def method(*args, **kwargs):
            return await self.call(name, *args, **kwargs)

        method.__name__ = name
        return method

    async def close(self) -> None:
        if self._executor is None:
            return
        await self.call("close")
        self._executor.shutdown(wait=True)
        self._executor = None
