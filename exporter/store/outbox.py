"""The webhook outbox in the store: rows are claimed under a lease, so that several replicas never send one twice.

One row per (urgent feedback, webhook) is written with the feedback
(``Database.add_feedback``); ``exporter.api.notify`` drains it. With several
replicas on one PostgreSQL every replica drains the same table, so a row is
taken with :func:`claim`: in one transaction, the due rows are selected
``FOR UPDATE SKIP LOCKED`` (rows another replica is claiming right now are
skipped, not waited for) and their ``next_attempt_at`` pushed to the end of
a lease. Until the lease ends no other claim returns the row; the claimer
then deletes it (delivered) or sets its backoff (failed) with
:func:`record_deliveries`, the failure only while the row is still under its
claim. A claimer that dies leaves the row due again when its lease ends. SQLite has one writer at a time (``BEGIN IMMEDIATE``), which
serialises claims the same way; ``SKIP LOCKED`` is left out there.

Every function takes a ``Database`` and runs on a store thread (``Store.run``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.store.sql import in_list

# Longer than a notifier's delivery of a claimed batch (``exporter.api.notify`` derives its own from its
# timeout), so that a live claimer always records the outcome before anyone else may claim the row.
LEASE_SECONDS = 60.0
COLUMNS = "id, feedback_id, url, payload, attempts, next_attempt_at"


@dataclass(frozen=True)
class Delivery:
    id: int
    feedback_id: str
    url: str
    payload: str
    attempts: int
    # next_attempt_at as read; for a claimed row, the end of this claim's lease, which names the claim:
    # record_deliveries writes a failure only while the row still carries it.
    lease_until: float = 0.0


def _only(urls: Sequence[str] | None) -> tuple[str, tuple]:
    """`` AND url IN (...)`` for the webhooks a replica knows (None: any), and its arguments."""
    if urls is None:
        return "", ()
    return f" AND {in_list('url', urls)}", tuple(urls)


def claim(db: Any, now: float, lease_seconds: float = LEASE_SECONDS, limit: int = 50,
          urls: Sequence[str] | None = None) -> list[Delivery]:
    """Take up to ``limit`` due rows (to ``urls`` when given) for ``lease_seconds``: no other claim returns
    them before ``now + lease_seconds``. Oldest due first."""
    if db.connection(create=False) is None:
        return []
    only, args = _only(urls)
    lock = " FOR UPDATE SKIP LOCKED" if db.dialect == "postgresql" else ""
    with db.transaction() as conn:
        rows = conn.execute(
            f"UPDATE outbox SET next_attempt_at = ? WHERE id IN (SELECT id FROM outbox WHERE next_attempt_at <= ?{only}"
            f" ORDER BY next_attempt_at, id LIMIT ?{lock}) RETURNING {COLUMNS}",
            (now + lease_seconds, now, *args, limit),
        ).fetchall()
    return sorted((Delivery(*row) for row in rows), key=lambda delivery: delivery.id)


def due_deliveries(db: Any, now: float, limit: int = 50) -> list[Delivery]:
    """Due rows without claiming them (inspection, tests)."""
    conn = db.connection(create=False)
    if conn is None:
        return []
    rows = conn.execute(f"SELECT {COLUMNS} FROM outbox WHERE next_attempt_at <= ?"
                        " ORDER BY next_attempt_at, id LIMIT ?", (now, limit)).fetchall()
    return [Delivery(*row) for row in rows]


def next_delivery_at(db: Any, urls: Sequence[str] | None = None) -> float | None:
    """When the next row (to ``urls`` when given) becomes due: a backoff's or a lease's end; None: none pending."""
    conn = db.connection(create=False)
    if conn is None:
        return None
    only, args = _only(urls)
    return conn.execute(f"SELECT MIN(next_attempt_at) FROM outbox WHERE TRUE{only}", args).fetchone()[0]


def record_deliveries(db: Any, done: Iterable[int] = (), failed: Iterable[tuple[int, int, float, str]] = (),
                      claims: Mapping[int, float] | None = None) -> None:
    """Outcomes of delivery attempts, in one transaction: ``done`` rows (ids) are deleted,
    ``failed`` ones get (id, attempts so far, next attempt time, error).

    ``claims`` (delivery id -> ``Delivery.lease_until`` of the claim that sent it): a failure is written
    only while the row still carries that claim. A claimer stalled past its lease may find the row claimed
    by another replica, sending it right now; its late failure must not make the row due again (a third
    send). A delivered row is deleted whoever holds it: the receiver has it.
    """
    claims = claims or {}
    unclaimed, claimed = [], []
    for delivery_id, attempts, next_at, error in failed:
        row = (attempts, next_at, error[:500], delivery_id)
        if delivery_id in claims:
            claimed.append((*row, claims[delivery_id]))
        else:
            unclaimed.append(row)
    update = "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?"
    with db.transaction() as conn:
        conn.executemany("DELETE FROM outbox WHERE id = ?", [(delivery_id,) for delivery_id in done])
        conn.executemany(update, unclaimed)
        conn.executemany(update + " AND next_attempt_at = ?", claimed)


def resume_deliveries(db: Any, urls: Iterable[str], now: float) -> tuple[int, int]:
    """At start-up, on SQLite (one replica): rows to webhooks no longer configured are dropped and every
    other pending row becomes due now, its backoff or its previous run's lease ended; (resumed, dropped).

    PostgreSQL (several replicas): nothing changes (0, 0). A pending row may be leased by another replica
    delivering it right now, and a webhook missing here may still be configured on the others during a
    rolling config change: they deliver it. A dead claimer's rows are due when their lease ends; rows to a
    webhook no replica has any more are never claimed and go with the retention purge.
    """
    conn = db.connection(create=False)
    if conn is None or db.dialect != "sqlite":
        return 0, 0
    urls = list(urls)
    keep = in_list("url", urls)
    with db.transaction() as conn:
        dropped = conn.execute(f"DELETE FROM outbox WHERE NOT ({keep})", urls).rowcount
        resumed = conn.execute(f"UPDATE outbox SET next_attempt_at = ? WHERE {keep}", (now, *urls)).rowcount
    return resumed, dropped


def rows(db: Any) -> list[tuple]:
    """Every pending row: (id, feedback_id, url, attempts, next_attempt_at, last_error)."""
    conn = db.connection(create=False)
    if conn is None:
        return []
    return conn.execute(
        "SELECT id, feedback_id, url, attempts, next_attempt_at, last_error FROM outbox ORDER BY id"
    ).fetchall()
