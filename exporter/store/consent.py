"""Consent records (``privacy.consent: opt_in``) and a user's data export, on the store's connection.

A consent record is one row per decision (user hash, ``granted`` or
``withdrawn``, the policy version the user saw, time): the history is the
evidence, the latest row is the state. Rows are keyed by the HMAC of the id
under the secret current when the decision was made; lookups take the hash
under every configured secret (``exporter.store.secrets``), like opt-outs.

Retention does not purge consent rows: like an opt-out they must outlive the
data they govern. Deleting a user removes them (``delete_user``); the
opt-out row a withdrawal wrote stays, so tracking does not restart.

Plain functions over a ``sqlite3.Connection`` (as ``exporter.store.errors``),
so that another backend can provide the same ``Database`` methods.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from exporter.store.sql import in_list

SCHEMA = """
CREATE TABLE IF NOT EXISTS consents (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_hash      TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('granted', 'withdrawn')),
    policy_version TEXT NOT NULL,
    created_at     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS consents_user ON consents (user_hash, seq);
"""

# What a user's export holds, per stored table that has a user_hash column, in the order of its rows.
EXPORT_ORDER = {"feedback": "seq", "activity": "day, tier, kind", "error_records": "created_at, error_id",
                "opt_outs": "created_at", "consents": "seq"}
EXPORT_TABLES = tuple(EXPORT_ORDER)


def record(conn: sqlite3.Connection, user_hash: str, state: str, policy_version: str, now: float) -> None:
    conn.execute("INSERT INTO consents (user_hash, state, policy_version, created_at) VALUES (?, ?, ?, ?)",
                 (user_hash, state, policy_version, now))


def granted(conn: sqlite3.Connection) -> set[str]:
    """Hashes whose latest consent record is ``granted``."""
    return {row[0] for row in conn.execute(
        "SELECT c.user_hash FROM consents c WHERE c.state = 'granted' AND c.seq = "
        "(SELECT MAX(seq) FROM consents WHERE user_hash = c.user_hash)")}


def delete_user(conn: sqlite3.Connection, hashes: Sequence[str]) -> int:
    return conn.execute(f"DELETE FROM consents WHERE {in_list('user_hash', hashes)}", tuple(hashes)).rowcount


def export_user(conn: sqlite3.Connection, hashes: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table that names one of ``hashes``, as column -> value, oldest first."""
    found: dict[str, list[dict[str, Any]]] = {}
    user = in_list("user_hash", hashes)
    for table in EXPORT_TABLES:
        cursor = conn.execute(f"SELECT * FROM {table} WHERE {user} ORDER BY {EXPORT_ORDER[table]}", tuple(hashes))
        names = [column[0] for column in cursor.description]
        found[table] = [dict(zip(names, row)) for row in cursor.fetchall()]
    return found
