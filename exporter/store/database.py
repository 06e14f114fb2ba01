"""Durable state of the ingestion API: feedback, per-user activity, opt-outs
and the webhook outbox, in one SQLite file under ``--data-dir``, or in one
PostgreSQL database shared by every replica (``--database-url``,
``exporter.store.postgres``): the same SQL and tests run on both.

- WAL journal, ``synchronous=FULL``: a write has reached the disk when its
  commit returns, and the API answers 201 only after that. The tables and
  their version are in ``exporter.store.schema``.
- User ids are stored only as their HMAC (``Hasher.digest``); the store
  never sees a raw id. An opted-out user's feedback has no user at all.
- Urgent-feedback notifications are written to the ``outbox`` table in the
  same transaction as the feedback, so a delivery survives a crash or a
  receiver that is down; ``exporter.api.notify`` drains it.
- Retention (``purge``) and user deletion (``delete_user``) remove rows and
  return exact counts per table.

All SQL runs on store threads (``Store``: one for SQLite, ``pool_size`` for
PostgreSQL, each with its own connection), so the event loop never waits on
the disk or the network. ``Database`` is the synchronous core, used by that thread,
by ``clary-exporter purge`` and by tests that inspect rows.

``Database`` opens the file lazily (reads of a missing file find nothing);
the exporter creates and checks it at start (``exporter.store.checks``), so a
disk problem is found then, not by the first feedback. An open database
whose file was deleted or replaced fails every operation rather than write
to a file nobody will read again.
"""

from __future__ import annotations

import asyncio
import errno
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from exporter.instrument.sentiment import label as sentiment_label
from exporter.store import consent, errors, outbox, postgres, privacy_feed
from exporter.store.health import StorageHealth
from exporter.store.insights import FeatureStats, feature_stats
from exporter.store.schema import connect, connect_postgres, file_id
from exporter.store.sql import in_list, where

DB_FILENAME = "clary.db"
DAY = 86400
# A lock held by another process (a backup, `clary-exporter purge`) is waited for this long, then 503.
BUSY_TIMEOUT_SECONDS = 5.0
POOL_SIZE = 4  # PostgreSQL: store threads, hence connections, per replica
# What a store operation may raise when the storage fails (StorageUnavailable for the API).
STORAGE_ERRORS = (sqlite3.Error, psycopg.Error, OSError)
TABLES = ("feedback", "activity", "opt_outs", "outbox", "error_records", "error_groups", "consents",
          "privacy_changes", "seen_events", "sketches")
T = TypeVar("T")


FEEDBACK_COLUMNS = ("id", "created_at", "tier", "type", "rating", "urgent", "text", "metadata", "user_hash",
                    "feature", "sentiment")


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
    feature: str | None = None  # from the feature allow-list (``other`` for an unknown one); None: not named
    sentiment: float | None = None  # VADER compound score of the text, -1..1; None: no text

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FEEDBACK_COLUMNS}


def new_feedback_id() -> str:
    return str(uuid.uuid4())


class Database:
    """Synchronous access to the SQLite file at ``path``, or to PostgreSQL at ``url``; one instance per thread."""

    def __init__(self, path: Path | None = None, busy_timeout: float = BUSY_TIMEOUT_SECONDS, url: str | None = None):
        if (path is None) == (url is None):
            raise ValueError("a SQLite path or a PostgreSQL url")
        self.path = Path(path) if path is not None else None
        self.url = url
        self.busy_timeout = busy_timeout
        self._conn: Any = None  # sqlite3.Connection or postgres.Connection
        self._file: tuple[int, int] | None = None  # (device, inode) of the open file

    @property
    def location(self) -> str:
        """Where the data lives, as logs and errors name it (a URL without its password)."""
        return postgres.redact(self.url) if self.url else str(self.path)

    @property
    def dialect(self) -> str:
        return "postgresql" if self.url else "sqlite"

    # --- connection ----------------------------------------------------------

    def connection(self, create: bool = True) -> Any:
        """The open connection; None when the file does not exist and ``create`` is off.

        PostgreSQL: (re)connected on demand, so the store recovers by itself once the database is back.
        """
        if self.url:
            if self._conn is None or self._conn.broken:
                self.close()
                self._conn = connect_postgres(self.url)
            return self._conn
        if self._conn is not None:
            if file_id(self.path) != self._file:  # FileNotFoundError once deleted
                raise OSError(errno.ESTALE, "the database file was replaced while open", str(self.path))
            return self._conn
        if not create and not self.path.exists():
            return None
        self._conn, self._file = connect(self.path, self.busy_timeout)
        return self._conn

    def probe(self, now: float) -> None:
        """A committed write of one small row: whether this file can be written, now."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('probe', ?)"
                         " ON CONFLICT (key) DO UPDATE SET value = excluded.value", (repr(now),))

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn, self._file = self._conn, None, None
            conn.close()

    def transaction(self) -> _Transaction:
        """``with db.transaction() as conn:`` BEGIN IMMEDIATE ... COMMIT, the file created if missing."""
        return _Transaction(self.connection(create=True))

    # --- feedback --------------------------------------------------------------

    def add_feedback(self, record: FeedbackRecord, deliveries: Iterable[tuple[str, str]] = ()) -> FeedbackRecord:
        """Insert one feedback row and its outbox rows (url, payload) atomically."""
        if not record.id:
            record = FeedbackRecord(**{**record.__dict__, "id": new_feedback_id()})
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO feedback (id, created_at, tier, type, rating, urgent, text, metadata, user_hash,"
                " feature, sentiment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.id, record.created_at, record.tier, record.type, record.rating, int(record.urgent),
                 record.text, json.dumps(record.metadata, separators=(",", ":")) if record.metadata is not None
                 else None, record.user_hash, record.feature, record.sentiment),
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
        feature: str | None = None,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first; returns (rows, cursor for the next page or None)."""
        conn = self.connection(create=False)
        if conn is None:
            return [], None
        filters, args = where((("tier = ?", tier), ("type = ?", type), ("feature = ?", feature),
                               ("created_at >= ?", since), ("seq < ?", before_seq)))
        sql = "SELECT seq, " + ", ".join(FEEDBACK_COLUMNS) + " FROM feedback" + filters + " ORDER BY seq DESC LIMIT ?"
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
        item["sentiment_label"] = sentiment_label(item["sentiment"])
        return item

    def feedback_insights(self, since: float, until: float, tier: str | None = None) -> list[FeatureStats]:
        """Per-feature counts of the feedback in [since, until) (``exporter.store.insights``)."""
        conn = self.connection(create=False)
        return [] if conn is None else feature_stats(conn, since, until, tier)

    def count(self, table: str, where: str = "TRUE", args: tuple = ()) -> int:
        if table not in TABLES:
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
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO activity (user_hash, day, tier, kind, count) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (user_hash, day, tier, kind) DO UPDATE SET count = activity.count + excluded.count",
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

    def delete_user(self, *user_hashes: str) -> dict[str, int]:
        """Remove every stored record of one user: feedback, its pending notifications, activity, error records,
        consent history (``exporter.store.consent``).

        One hash per configured HMAC secret (the current and previous ones).
        The opt-out row stays: deleting a user's data must not start tracking them again.
        """
        conn = self.connection(create=False)
        if conn is None:
            return {"feedback": 0, "notifications": 0, "activity": 0, "errors": 0, "consents": 0}
        user = in_list("user_hash", user_hashes)
        with _Transaction(conn):
            notifications = conn.execute(
                f"DELETE FROM outbox WHERE feedback_id IN (SELECT id FROM feedback WHERE {user})", user_hashes
            ).rowcount
            feedback = conn.execute(f"DELETE FROM feedback WHERE {user}", user_hashes).rowcount
            activity = conn.execute(f"DELETE FROM activity WHERE {user}", user_hashes).rowcount
            error_records = errors.delete_user(conn, user_hashes)
            consents = consent.delete_user(conn, user_hashes)
            privacy_feed.append(conn, user_hashes, "deleted", time.time())  # other replicas drop their buffers
        return {"feedback": feedback, "notifications": notifications, "activity": activity, "errors": error_records,
                "consents": consents}

    def purge(self, retention_days: int, now: float | None = None) -> dict[str, int]:
        """Delete feedback, its pending notifications, activity and error records older than the retention."""
        conn = self.connection(create=False)
        if conn is None:
            return {"feedback": 0, "notifications": 0, "activity": 0, "errors": 0}
        cutoff = (time.time() if now is None else now) - retention_days * DAY
        with _Transaction(conn):
            notifications = conn.execute(
                "DELETE FROM outbox WHERE feedback_id IN (SELECT id FROM feedback WHERE created_at < ?)"
                " OR created_at < ?", (cutoff, cutoff)
            ).rowcount
            feedback = conn.execute("DELETE FROM feedback WHERE created_at < ?", (cutoff,)).rowcount
            # A day's row is older than the cutoff once the whole day is.
            activity = conn.execute("DELETE FROM activity WHERE (day + 1) * ? <= ?", (DAY, cutoff)).rowcount
            error_records = errors.purge(conn, cutoff)
            privacy_feed.purge(conn, time.time() if now is None else now)  # the feed's horizon, not retention
        return {"feedback": feedback, "notifications": notifications, "activity": activity, "errors": error_records}

    def set_opt_out(self, user_hash: str, opted_out: bool, now: float | None = None) -> bool:
        """Persist the choice and its row of the privacy feed (``exporter.store.privacy_feed``); whether anything
        changed."""
        now = time.time() if now is None else now
        if not opted_out and self.connection(create=False) is None:
            return False  # no file, no opt-out to lift
        with self.transaction() as conn:
            if opted_out:
                changed = conn.execute("INSERT INTO opt_outs (user_hash, created_at) VALUES (?, ?)"
                                       " ON CONFLICT DO NOTHING", (user_hash, now)).rowcount == 1
            else:
                changed = conn.execute("DELETE FROM opt_outs WHERE user_hash = ?", (user_hash,)).rowcount == 1
            privacy_feed.append(conn, (user_hash,), "opt_out" if opted_out else "opt_in", now)
        return changed

    def opted_out(self) -> set[str]:
        conn = self.connection(create=False)
        if conn is None:
            return set()
        return {row[0] for row in conn.execute("SELECT user_hash FROM opt_outs")}

    def record_consent(self, user_hash: str, state: str, policy_version: str, now: float | None = None) -> None:
        """Append a consent decision; a withdrawal also stores the opt-out, in the same transaction."""
        now = time.time() if now is None else now
        with self.transaction() as conn:
            consent.record(conn, user_hash, state, policy_version, now)
            if state == "withdrawn":
                conn.execute("INSERT INTO opt_outs (user_hash, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                             (user_hash, now))
            privacy_feed.append(conn, (user_hash,), f"consent_{state}", now)

    def consented(self) -> set[str]:
        """Hashes whose latest consent is ``granted`` (loaded at start, like the opt-outs)."""
        conn = self.connection(create=False)
        return set() if conn is None else consent.granted(conn)

    def export_user(self, *user_hashes: str) -> dict[str, list[dict[str, Any]]]:
        """Every stored row of one user (one hash per configured secret), per table: the right of access."""
        conn = self.connection(create=False)
        if conn is None:
            return {table: [] for table in consent.EXPORT_TABLES}
        return consent.export_user(conn, user_hashes)

    # --- webhook outbox (``exporter.store.outbox``; the notifier claims rows with ``outbox.claim``) ------------

    def record_deliveries(self, done: Iterable[int] = (), failed: Iterable[tuple[int, int, float, str]] = (),
                          claims: Mapping[int, float] | None = None) -> None:
        outbox.record_deliveries(self, done, failed, claims)

    def resume_deliveries(self, urls: Iterable[str], now: float) -> tuple[int, int]:
        return outbox.resume_deliveries(self, urls, now)

    def outbox(self) -> list[tuple]:
        return outbox.rows(self)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on error) on an autocommit connection."""

    def __init__(self, conn: Any):
        self.conn = conn

    def __enter__(self) -> Any:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


class Store:
    """Async façade: every ``Database`` call runs on a store thread.

    SQLite: one thread and one connection (SQLite has one writer anyway).
    PostgreSQL: ``pool_size`` threads, each with its own connection, so the
    connections a replica opens are bounded and a slow query holds one thread,
    not the API.
    """

    def __init__(self, data_dir: Path | None = None, filename: str = DB_FILENAME,
                 busy_timeout: float = BUSY_TIMEOUT_SECONDS, url: str | None = None, pool_size: int = POOL_SIZE):
        self.url = url
        self.path = None if url else Path(data_dir) / filename
        self.db = Database(self.path, busy_timeout, url=url)  # SQLite: the store thread's; PostgreSQL: the caller's
        self.location = self.db.location
        self.workers = max(1, pool_size) if url else 1
        self.health = StorageHealth(self.location)
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._thread_dbs: list[Database] = []

    @classmethod
    def for_config(cls, config) -> Store:
        """The store a configuration names: PostgreSQL at ``database_url``, else SQLite under ``data_dir``."""
        if config.database_url:
            return cls(url=config.database_url, pool_size=config.database_pool_size)
        return cls(config.data_dir)

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="clary-store")
            return self._executor

    def _database(self) -> Database:
        """The calling store thread's Database."""
        if self.workers == 1:
            return self.db
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = Database(url=self.url)
            with self._lock:
                self._thread_dbs.append(db)
        return db

    async def run(self, func: Callable[..., T], *args, **kwargs) -> T:
        """``func(db, *args, **kwargs)`` on a store thread (a check of ``exporter.store.checks``)."""
        return await self._on_thread(func.__name__, lambda: func(self._database(), *args, **kwargs))

    async def call(self, method: str, *args, **kwargs):
        return await self._on_thread(method, lambda: getattr(self._database(), method)(*args, **kwargs))

    async def _on_thread(self, name: str, job: Callable[[], T]) -> T:
        """Run ``job`` on the store thread; a storage failure raises StorageUnavailable (and marks health down)."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool(), job)
        except STORAGE_ERRORS as exc:
            raise self.health.failed(name, exc) from exc

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
        if self.workers == 1:
            await self.call("close")
        self._executor.shutdown(wait=True)
        self._executor = None
        for db in [self.db, *self._thread_dbs]:  # the threads are gone: nothing else uses them now
            db.close()
        self._thread_dbs.clear()
        self._local = threading.local()
