"""exporter.store.sketches on both engines: replicas' buckets upserted, read back but one's own, expired."""

from __future__ import annotations

import pytest

from exporter.store import sketches
from exporter.store.database import Database


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        database = Database(tmp_path / "clary.db")
    else:
        database = Database(url=request.getfixturevalue("database_url"))
    assert database.dialect == request.param
    yield database
    database.close()


def test_upsert_replaces_a_replicas_bucket_and_since_skips_the_reader(db):
    assert sketches.put(db, "a", [("users", "lite", 60, 100, b"one"), ("users", "lite", 60, 101, b"two")]) == 2
    sketches.put(db, "a", [("users", "lite", 60, 101, b"two, later")])
    sketches.put(db, "b", [("users", "lite", 60, 101, b"bee"), ("licenses", "lite", 3600, 5, b"lic")])

    rows = sorted(sketches.since(db, {("users", 60): 0}))
    assert rows == [("users", "lite", 60, 100, "a", b"one"), ("users", "lite", 60, 101, "a", b"two, later"),
                    ("users", "lite", 60, 101, "b", b"bee")]
    assert all(type(row[5]) is bytes for row in rows)  # bytea/memoryview normalised
    assert sorted(sketches.since(db, {("users", 60): 101}, exclude="a")) == [("users", "lite", 60, 101, "b", b"bee")]
    assert sketches.since(db, {("licenses", 3600): 0}, exclude="b") == []
    assert sketches.since(db, {("licenses", 3600): 5}) == [("licenses", "lite", 3600, 5, "b", b"lic")]


def test_expire_drops_old_slots_of_every_replica_per_kind_and_size(db):
    for replica in ("a", "b"):
        sketches.put(db, replica, [("users", "lite", 60, slot, b"x") for slot in (10, 11, 12)]
                     + [("users", "lite", 3600, 10, b"h")])
    assert sketches.expire(db, {("users", 60): 12}) == 4
    assert sorted((r[3], r[2], r[4]) for r in sketches.since(db, {("users", 60): 0, ("users", 3600): 0})) == [
        (10, 3600, "a"), (10, 3600, "b"), (12, 60, "a"), (12, 60, "b")]


def test_exchange_publishes_expires_and_returns_the_others(db):
    sketches.put(db, "b", [("users", "pro", 60, 7, b"old"), ("users", "pro", 60, 50, b"new")])
    found = sketches.exchange(db, "a", [("users", "pro", 60, 50, b"mine")], {("users", 60): 40}, {("users", 60): 10})
    assert found == [("users", "pro", 60, 50, "b", b"new")]
    assert sorted(r[4] for r in sketches.since(db, {("users", 60): 0})) == ["a", "b"]  # slot 7 expired


def test_reading_a_missing_sqlite_file_creates_nothing(tmp_path):
    db = Database(tmp_path / "none" / "clary.db")
    assert sketches.since(db, {("users", 60): 0}) == [] and sketches.expire(db, {("users", 60): 1}) == 0
    assert not (tmp_path / "none").exists()
