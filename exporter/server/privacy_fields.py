"""What the exporter keeps that could relate to a person: the inventory the privacy notice is made from.

Every column of the store (``exporter.store.schema``, ``exporter.store.errors``)
and every metric label of the catalog has an entry here, and
``tests/server/test_privacy_notice.py`` reads the real schema and the real
catalog and fails when one is missing or an entry names something that no
longer exists. So a new column or label cannot ship without someone
deciding, here, whether it is personal, how it is protected and how long it
is kept; the notice (``exporter.server.privacy``) is rendered from these
tables and the running config, never written by hand.

A retention is a key of :data:`RETENTIONS`, a template filled from the
config (``retention_days``, ``license_stale_after``...), so the notice
states the durations this exporter actually runs with.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import NamedTuple


class Field(NamedTuple):
    personal: bool
    protection: str  # how it is anonymised or why it needs none
    retention: str  # a key of RETENTIONS


class Label(NamedTuple):
    personal: bool
    note: str


RETENTIONS = {
    "retention": "{retention_days} days after it was stored (retention_days), then purged; or until the user is "
                 "deleted",
    "outbox": "until the notification is delivered, at most as long as its feedback ({retention_days} days)",
    "opt_out": "until the user opts back in: it is the record of the objection, so neither retention nor "
               "deleting the user's data removes it (deleting would start tracking again)",
    "consent": "until the user is deleted: the record of consent outlives the data it governs, so retention does "
               "not purge it",
    "store": "for the life of the store; nothing personal",
    "feed": "about an hour, at most two (purged with the retention run); deleting the user adds a row rather than "
            "removing one: the other replicas must read it",
    "dedupe": "the duplicate window (about an hour), then purged",
    "sketch": "the counting windows (at most a day and a margin), then purged; deleting a user does not remove "
              "them from a sketch (a sketch cannot find one user's part), it only ages out",
}

_HASH = "HMAC-SHA256 of the user id under the configured secret (hmac_secret); the raw id is never stored"
_REDACTED = ("redacted before storage (exporter.logs.redact): secrets, e-mail addresses, UUIDs, hex ids and long "
             "numbers are replaced")
_NONE = "not personal"

STORE_FIELDS: dict[str, Field] = {
    # feedback: what a user wrote, stored to be read by the product team.
    "feedback.seq": Field(False, "row number", "retention"),
    "feedback.id": Field(False, "random id given by the exporter", "retention"),
    "feedback.created_at": Field(False, "time of submission", "retention"),
    "feedback.tier": Field(False, "customer tier from the API key, not the person", "retention"),
    "feedback.type": Field(False, "bug, feature_request, general or survey", "retention"),
    "feedback.rating": Field(False, "1 to 5", "retention"),
    "feedback.urgent": Field(False, "flag", "retention"),
    "feedback.text": Field(True, "free text as the user wrote it: it may name people; kept for the product team, "
                                 "deleted with the user", "retention"),
    "feedback.metadata": Field(True, "free-form JSON the client sent with the feedback; may hold personal data",
                               "retention"),
    "feedback.user_hash": Field(True, _HASH + "; empty for an opted-out user", "retention"),
    "feedback.feature": Field(False, "product feature from the allow-list", "retention"),
    "feedback.sentiment": Field(False, "score computed from the text (VADER)", "retention"),
    # activity: per-user daily counts behind the active-user figures.
    "activity.user_hash": Field(True, _HASH + "; nothing is recorded for an opted-out user", "retention"),
    "activity.day": Field(False, "day number, not a time of day", "retention"),
    "activity.tier": Field(False, "customer tier", "retention"),
    "activity.kind": Field(False, "kind of activity (feedback, event...)", "retention"),
    "activity.count": Field(False, "count", "retention"),
    # opt_outs: the record of an objection.
    "opt_outs.user_hash": Field(True, _HASH, "opt_out"),
    "opt_outs.created_at": Field(False, "time of the opt-out", "opt_out"),
    # consents: one row per consent decision (exporter.store.consent); the latest is the state.
    "consents.seq": Field(False, "row number", "consent"),
    "consents.user_hash": Field(True, _HASH, "consent"),
    "consents.state": Field(False, "granted or withdrawn", "consent"),
    "consents.policy_version": Field(False, "version of the policy the user saw", "consent"),
    "consents.created_at": Field(False, "time of the decision", "consent"),
    # privacy_changes: the feed that carries opt-outs, consents and deletions to every replica
    # (exporter.store.privacy_feed).
    "privacy_changes.seq": Field(False, "row number", "feed"),
    "privacy_changes.user_hash": Field(True, _HASH, "feed"),
    "privacy_changes.change": Field(False, "opt_out, opt_in, consent_granted, consent_withdrawn or deleted", "feed"),
    "privacy_changes.created_at": Field(False, "time of the change", "feed"),
    # seen_events: the cross-replica window of event batches already counted.
    "seen_events.seq": Field(False, "row number", "dedupe"),
    "seen_events.replica": Field(False, "name of the exporter replica", "dedupe"),
    "seen_events.seen_at": Field(False, "time", "dedupe"),
    "seen_events.digests": Field(False, "hashes of the event ids the client chose for retries (one a batch, one replica's 0.25 s), "
                                 "not of user ids", "dedupe"),
    # sketches: each replica's distinct-count sketches per time bucket, merged into the deployment's counts.
    "sketches.kind": Field(False, "users or licenses", "sketch"),
    "sketches.tier": Field(False, "customer tier", "sketch"),
    "sketches.size": Field(False, "bucket length in seconds", "sketch"),
    "sketches.slot": Field(False, "bucket number (time)", "sketch"),
    "sketches.replica": Field(False, "name of the exporter replica", "sketch"),
    "sketches.data": Field(False, "HyperLogLog registers over user or license HMACs, a count estimate: no id or "
                                  "hash can be read back; with the HMAC secret one could at most guess weakly "
                                  "whether one user may be among those counted", "sketch"),
    # outbox: urgent feedback waiting to be sent to the configured webhooks.
    "outbox.id": Field(False, "row number", "outbox"),
    "outbox.feedback_id": Field(False, "id of the feedback row", "outbox"),
    "outbox.url": Field(False, "configured webhook URL", "outbox"),
    "outbox.payload": Field(True, "the notification: the feedback text and its metadata, never the user id",
                            "outbox"),
    "outbox.created_at": Field(False, "time", "outbox"),
    "outbox.attempts": Field(False, "count", "outbox"),
    "outbox.next_attempt_at": Field(False, "time", "outbox"),
    "outbox.last_error": Field(False, "the receiver's error, no user data", "outbox"),
    # meta: the secret's fingerprint (exporter.store.secrets), never the secret.
    "meta.key": Field(False, _NONE, "store"),
    "meta.value": Field(False, "fingerprint of the HMAC secret, not the secret", "store"),
    # error_records: one row per server error (exporter.store.errors).
    "error_records.error_id": Field(False, "random id returned in the 500 body", "retention"),
    "error_records.fingerprint": Field(False, "hash of the error's type and frames", "retention"),
    "error_records.created_at": Field(False, "time", "retention"),
    "error_records.tier": Field(False, "customer tier", "retention"),
    "error_records.route": Field(False, "router template, never the raw path (ids in URLs are not kept)",
                                 "retention"),
    "error_records.error_type": Field(False, "exception class", "retention"),
    "error_records.user_hash": Field(True, _HASH, "retention"),
    "error_records.message": Field(True, _REDACTED, "retention"),
    "error_records.trace": Field(True, _REDACTED + "; innermost frames only", "retention"),
    # error_groups: one row per fingerprint; users affected are read from the records.
    "error_groups.fingerprint": Field(False, _NONE, "store"),
    "error_groups.error_type": Field(False, _NONE, "store"),
    "error_groups.first_seen": Field(False, _NONE, "store"),
    "error_groups.last_seen": Field(False, _NONE, "store"),
    "error_groups.count": Field(False, "occurrences, no users", "store"),
    "error_groups.status": Field(False, _NONE, "store"),
    "error_groups.resolved_at": Field(False, _NONE, "store"),
    "error_groups.message": Field(True, "latest message, " + _REDACTED, "store"),
}

_BOUNDED = "bounded allow-list, no per-person value"
LABELS: dict[str, Label] = {
    "tier": Label(False, "customer tier from the API key"),
    "route": Label(False, "router template (/users/{id}), never the raw path: no ids from URLs"),
    "license": Label(True, "pseudonymous: first 12 hex characters of HMAC-SHA256(secret, license key); series "
                           "dropped after license_stale_after"),
    "method": Label(False, "HTTP method"),
    "code": Label(False, "HTTP status code"),
    "group": Label(False, "error group fingerprint, no user"),
    "error_type": Label(False, "exception class"),
    "action": Label(False, _BOUNDED), "from_action": Label(False, _BOUNDED), "to_action": Label(False, _BOUNDED),
    "funnel": Label(False, "configured funnel name"), "step": Label(False, "funnel step number"),
    "feature": Label(False, _BOUNDED), "doc_type": Label(False, _BOUNDED), "model": Label(False, _BOUNDED),
    "provider": Label(False, _BOUNDED), "type": Label(False, _BOUNDED), "outcome": Label(False, _BOUNDED),
    "result": Label(False, _BOUNDED), "reason": Label(False, _BOUNDED), "kind": Label(False, _BOUNDED),
    "limit": Label(False, _BOUNDED), "queue": Label(False, _BOUNDED), "direction": Label(False, _BOUNDED),
    "window": Label(False, _BOUNDED), "operation": Label(False, _BOUNDED), "scope": Label(False, _BOUNDED),
    "error": Label(False, _BOUNDED),
    "metric": Label(False, "catalog metric name"), "label": Label(False, "catalog label name"),
    "collector": Label(False, "collector name"), "version": Label(False, "exporter version"),
    "interface": Label(False, "host network interface"),
    "gpu": Label(False, "hardware"), "uuid": Label(False, "hardware"), "model_name": Label(False, "hardware"),
    "driver_version": Label(False, "hardware"), "gpu_instance_id": Label(False, "hardware"),
    "compute_instance_id": Label(False, "hardware"), "mig_profile": Label(False, "hardware"),
    "mig_uuid": Label(False, "hardware"),
}

IN_MEMORY = (
    ("active users and licenses",
     "HyperLogLog sketches of user and license HMACs, no ids; a sketch cannot be turned back into ids",
     "the counting windows (at most a day)"),
    ("workflow sessions", "session ids as keyed BLAKE2b hashes (a subkey of the HMAC secret)",
     "{workflow_session_timeout} seconds without an action (workflow_session_timeout)"),
    ("license series", "license keys as 12-hex HMAC prefixes",
     "{license_stale_after} seconds without a license_status event (license_stale_after; 0: until restart)"),
    ("duplicate suppression", "BLAKE2b digests of urgent feedback texts, not the texts",
     "{urgent_notify_window_seconds} seconds (urgent_notify_window_seconds)"),
)


def store_columns(conn: sqlite3.Connection) -> set[str]:
    """``table.column`` for every column of every table of a store (SQLite's own tables left out)."""
    tables = [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return {f"{table}.{row[1]}" for table in tables for row in conn.execute(f'PRAGMA table_info("{table}")')}


def catalog_labels(specs: Iterable) -> set[str]:
    """Every label name the metric families use."""
    return {label.name for spec in specs for label in spec.labels}


def uncovered(columns: set[str], labels: set[str]) -> dict[str, list[str]]:
    """What the inventory lacks (``missing_*``) and what it names that no longer exists (``stale_*``)."""
    return {
        "missing_columns": sorted(columns - STORE_FIELDS.keys()),
        "stale_columns": sorted(STORE_FIELDS.keys() - columns),
        "missing_labels": sorted(labels - LABELS.keys()),
        "stale_labels": sorted(LABELS.keys() - labels),
    }
