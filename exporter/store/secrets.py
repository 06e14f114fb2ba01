"""Which HMAC secret the stored hashes were made with: a fingerprint in ``meta``, never the secret.

User ids are stored only as HMACs of the secret. Restarted with another
secret, the exporter hashes ``dave`` to a value no row carries: ``DELETE
/api/v1/users/dave`` removes nothing and an opted-out user is tracked again,
silently. So the store records a fingerprint of its secret and
:func:`reconcile` refuses (one line, exit 2) to start with another one,
unless the stored one is given as a previous secret
(``hmac_previous_secrets``): then the store is rotated to the new secret,
and deletion, opt-out and opt-in look up the hash of every given secret.

A rotated-away secret is remembered (fingerprint and time) for as long as
rows stored before the rotation exist: dropping it from the previous secrets
while they do is refused too, since it would orphan them the same way. Once
retention has removed them (and no opt-out is older), it is forgotten.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from exporter.store.health import StorageError

# HMAC(secret, this): a fixed message of its own, so a fingerprint is never a user's hash.
FINGERPRINT_MESSAGE = b"clary-fingerprint-v1"
FINGERPRINT_CHARS = 16
ROTATION_DOCS = "docs/configuration.md#rotating-the-hmac-secret"
DAY = 86400


def fingerprint(secret: str) -> str:
    """A short, stable fingerprint of a secret (64 bits of HMAC-SHA256 of a fixed message)."""
    return hmac.new(secret.encode(), FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()[:FINGERPRINT_CHARS]


@dataclass(frozen=True)
class Secrets:
    """The fingerprints of the configured secret and of the previous ones."""

    current: str
    previous: tuple[str, ...] = ()

    @classmethod
    def of(cls, secret: str, previous: Iterable[str] = ()) -> Secrets:
        return cls(fingerprint(secret), tuple(fingerprint(s) for s in previous if s != secret))


def _get(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def _set(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                 (key, value))


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def rows_before(conn: sqlite3.Connection, until: float) -> dict[str, int]:
    """Rows carrying a user hash that were stored before ``until`` (made with the secret of then)."""
    one = lambda sql: conn.execute(sql, (until,)).fetchone()[0]
    return {
        "opt-outs": one("SELECT COUNT(*) FROM opt_outs WHERE created_at < ?"),
        "feedback": one("SELECT COUNT(*) FROM feedback WHERE user_hash IS NOT NULL AND created_at < ?"),
        "activity": one(f"SELECT COUNT(*) FROM activity WHERE day * {DAY} < ?"),
    }


def reconcile(conn: sqlite3.Connection, path: str, secrets: Secrets, now: float) -> list[str]:
    """Record, confirm or rotate the stored fingerprint (in a transaction of the caller's).

    Returns what to log; raises :class:`StorageError` with a one-line fix when
    stored hashes would become unreachable.
    """
    stored = _get(conn, "hmac_fingerprint")
    retired: list[list] = json.loads(_get(conn, "hmac_retired") or "[]")  # [[fingerprint, until], ...]
    notes = []
    if stored is None:
        notes.append(f"recorded the HMAC secret's fingerprint {secrets.current}")
    elif stored != secrets.current:
        if stored not in secrets.previous:
            raise StorageError(
                f"{path} was written with another HMAC secret (fingerprint {stored}; the configured secret's is "
                f"{secrets.current}): deletion and opt-outs would miss its users. Start with that secret, or keep it "
                f"in hmac_previous_secrets (CLARY_HMAC_PREVIOUS_SECRETS) to rotate to the new one ({ROTATION_DOCS})")
        retired.append([stored, now])
        notes.append(f"rotated the HMAC secret from fingerprint {stored} to {secrets.current}; keep the previous "
                     "secret configured while data stored before now is kept")
    kept = []
    for old, until in retired:
        if old == secrets.current:
            continue  # rotated back to it
        if old not in secrets.previous:
            counts = rows_before(conn, until)
            if any(counts.values()):
                held = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
                raise StorageError(
                    f"{path}: {held} were stored before {_day(until)} under the previous HMAC secret (fingerprint "
                    f"{old}), which is no longer configured: keep it in hmac_previous_secrets "
                    f"(CLARY_HMAC_PREVIOUS_SECRETS) until retention has removed them ({ROTATION_DOCS})")
            notes.append(f"forgot the previous HMAC secret {old}: nothing stored is hashed with it any more")
            continue
        kept.append([old, until])
    _set(conn, "hmac_fingerprint", secrets.current)
    _set(conn, "hmac_retired", json.dumps(kept))
    return notes
