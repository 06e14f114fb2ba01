"""exporter.store.errors: groups and their status; retention and user deletion remove error records."""

from __future__ import annotations

import pytest

from exporter.store import errors
from exporter.store.database import DAY
from tests import store_backend

NOW = 1_750_000_000.0
U1, U2 = "a" * 64, "b" * 64


def record(error_id: str, age_days: float, user: str | None, group: str = "f00d", tier: str = "lite"):
    return errors.ErrorRecord(error_id=error_id, fingerprint=group, created_at=NOW - age_days * DAY, tier=tier,
                              route="/x", error_type="KeyError", user_hash=user, message=f"m{error_id}",
                              trace="t")


@pytest.fixture
def db(tmp_path):
    database = store_backend.database(tmp_path)
    yield database
    database.close()


def test_new_groups_regressions_and_duplicate_ids(db):
    changes = errors.add_errors(db, [record("1", 1, U1), record("2", 1, U2, group="beef", tier="professional")])
    assert [(c.fingerprint, c.tier, c.change) for c in changes] == [("f00d", "lite", "new"),
                                                                  ("beef", "professional", "new")]
    assert errors.add_errors(db, [record("1", 1, U1)]) == []  # the same error id again: nothing changes
    assert errors.group(db, "f00d")["count"] == 1
    assert errors.resolve_group(db, "f00d", NOW)["status"] == "resolved"
    assert errors.resolve_group(db, "cafe", NOW) is None
    assert errors.open_groups_by_tier(db) == {"professional": 1}
    changes = errors.add_errors(db, [record("3", 0, U1), record("4", 0, U2)])
    assert [c.change for c in changes] == ["regressed"]  # once, by the first record after the resolve
    group = errors.group(db, "f00d")
    assert (group["status"], group["count"], group["users_affected"], group["message"]) == ("regressed", 3, 2, "m4")
    assert errors.top_groups(db) == [("lite", "f00d", 2), ("professional", "beef", 1)]


def test_user_deletion_and_retention_remove_error_records(db):
    errors.add_errors(db, [record("old", 40, U1, group="0ld"), record("1", 1, U1), record("2", 1, U2),
                           record("3", 1, None)])
    removed = db.delete_user(U1)
    assert removed["errors"] == 2
    assert errors.lookup(db, "1") is None and errors.lookup(db, "old") is None
    assert errors.lookup(db, "2")["group"]["users_affected"] == 1
    errors.add_errors(db, [record("older", 40, U2, group="0ld")])
    assert db.purge(30, NOW)["errors"] == 1
    assert errors.lookup(db, "older") is None
    assert errors.group(db, "0ld") is None  # not seen within the retention: the group goes too
    assert db.count("error_records") == 2 and db.count("error_groups") == 1
