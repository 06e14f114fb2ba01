"""exporter.store.checks and health: every storage fault found at start is one line naming the path and the cause.

The faults are real (tests/storage_faults.py): garbage and damaged pages,
directories and files in the wrong places, a read-only tmpfs, a full one,
an immutable file. The same checks serve the exporter's start (exit 2) and
``clary-exporter purge``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from exporter.store.checks import open_checked, reopen
from exporter.store.database import Database, FeedbackRecord
from exporter.store.health import (
    StorageError,
    StorageHealth,
    StorageUnavailable,
    describe,
)
from exporter.store.schema import SCHEMA_VERSION
from tests import storage_faults as faults

pytestmark = pytest.mark.sqlite_only  # about SQLite files themselves: on SQLite whatever CLARY_TEST_STORE says

NOW = 1_750_000_000.0


def _record(text: str = "kept") -> FeedbackRecord:
    return FeedbackRecord(tier="lite", type="general", rating=4, text=text, metadata=None, user_hash="a" * 64,
                          urgent=False, created_at=NOW)


def _valid_db(data_dir: Path, rows: int = 50) -> Path:
    db = Database(data_dir / "clary.db")
    open_checked(db)
    for i in range(rows):
        db.add_feedback(_record(f"row {i} " + "x" * 200))
    db.close()  # the last connection checkpoints the WAL into the file
    return data_dir / "clary.db"


def _refused(data_dir: Path, create: bool = True) -> str:
    db = Database(data_dir / "clary.db")
    with pytest.raises(StorageError) as caught:
        open_checked(db, create=create)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_start_creates_the_data_dir_and_the_database_and_commits_a_probe(tmp_path):
    db = Database(tmp_path / "new" / "dir" / "clary.db")
    assert open_checked(db, now=NOW) == []
    assert (tmp_path / "new" / "dir" / "clary.db").is_file()
    version = db.connection().execute("PRAGMA user_version").fetchone()[0]
    probe = db.connection().execute("SELECT value FROM meta WHERE key = 'probe'").fetchone()[0]
    assert (version, float(probe)) == (SCHEMA_VERSION, NOW)
    db.close()


def test_garbage_in_place_of_the_database(tmp_path):
    (tmp_path / "clary.db").write_bytes(faults.GARBAGE)
    message = _refused(tmp_path)
    assert message.startswith(f"{tmp_path / 'clary.db'}: not a SQLite database")
    assert "restore it from a backup" in message


def test_a_damaged_page_is_found_by_quick_check(tmp_path):
    faults.corrupt_page(_valid_db(tmp_path))
    message = _refused(tmp_path)
    assert message.startswith(f"{tmp_path / 'clary.db'}: ")
    assert "corrupt" in message and "restore it from a backup" in message


def test_a_directory_in_place_of_the_database(tmp_path):
    (tmp_path / "clary.db").mkdir()
    assert _refused(tmp_path) == f"{tmp_path / 'clary.db'} is a directory, not a database file"


def test_a_data_dir_that_is_a_regular_file(tmp_path):
    (tmp_path / "data").write_text("not a directory")
    assert _refused(tmp_path / "data") == f"data dir {tmp_path / 'data'} is not a directory"


def test_a_data_dir_under_a_regular_file(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    data_dir = tmp_path / "file" / "sub" / "data"
    assert _refused(data_dir) == f"data dir {data_dir}: {tmp_path / 'file'} is a file, not a directory"


def test_a_read_only_file_system(tmp_path):
    with faults.tmpfs(tmp_path / "mnt") as mnt:
        _valid_db(mnt, rows=1)
        faults.remount(mnt, "ro")
        assert _refused(mnt) == f"data dir {mnt} is not writable (a read-only file system, or permissions)"
        assert _refused(mnt / "data") == f"data dir {mnt / 'data'}: Read-only file system: {mnt / 'data'}"


def test_an_immutable_database_file(tmp_path):
    path = _valid_db(tmp_path, rows=1)
    with faults.immutable(path):
        message = _refused(tmp_path)
    assert message.startswith(f"{path}: read-only"), message


def test_a_full_disk(tmp_path):
    with faults.tmpfs(tmp_path / "mnt", size="256k") as mnt:
        faults.fill(mnt)
        message = _refused(mnt)
    assert message.startswith(f"{mnt / 'clary.db'}: disk full") or "No space left on device" in message, message


def test_a_newer_schema(tmp_path):
    conn = sqlite3.connect(tmp_path / "clary.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    assert _refused(tmp_path) == (f"{tmp_path / 'clary.db'}: schema version 99 is newer than this exporter's "
                                  f"({SCHEMA_VERSION}); run the newer exporter, or restore a backup")


def test_without_create_a_missing_dir_or_database_is_refused(tmp_path):
    assert _refused(tmp_path / "nowhere", create=False) == f"data dir {tmp_path / 'nowhere'} does not exist"
    assert not (tmp_path / "nowhere").exists()
    assert _refused(tmp_path, create=False) == f"no database at {tmp_path / 'clary.db'}: is the data dir right?"
    assert not (tmp_path / "clary.db").exists()


def test_a_deleted_or_replaced_file_fails_every_operation(tmp_path):
    db = Database(tmp_path / "clary.db")
    open_checked(db)
    db.add_feedback(_record())
    spare = _valid_db(tmp_path / "spare", rows=2)
    os.replace(spare, tmp_path / "clary.db")  # another file now answers to the name
    with pytest.raises(OSError, match="replaced while open"):
        db.add_feedback(_record("lost?"))
    os.remove(tmp_path / "clary.db")
    with pytest.raises(FileNotFoundError):
        db.list_feedback()
    db.close()


def test_reopen_takes_a_restored_file_and_never_recreates_a_deleted_one(tmp_path):
    db = Database(tmp_path / "clary.db")
    open_checked(db)
    db.set_opt_out("b" * 64, True, NOW)
    backup = tmp_path / "backup.db"
    db.connection().execute(f"VACUUM INTO '{backup}'")
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"clary.db{suffix}").unlink(missing_ok=True)
    with pytest.raises(StorageError, match="no database at"):
        reopen(db)
    assert not (tmp_path / "clary.db").exists()
    os.replace(backup, tmp_path / "clary.db")
    notes, opted_out = reopen(db)
    assert (notes, opted_out) == ([], {"b" * 64})
    db.close()


def test_health_is_down_from_a_failure_until_recovered_and_counts_per_operation(tmp_path, caplog):
    health = StorageHealth(tmp_path / "clary.db")
    assert health.up and {f.name: [s.value for s in f.samples] for f in health.collect()} == {
        "clary_exporter_storage_up": [1.0], "clary_exporter_storage_errors": [0.0] * 7}
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorname = "SQLITE_FULL"
    error = health.failed("add_feedback", full)
    health.failed("purge", OSError(30, "Read-only file system", "/x"))
    assert isinstance(error, StorageUnavailable) and isinstance(error, sqlite3.Error)
    assert (error.operation, error.cause) == ("feedback", "disk full (database or disk is full)")
    assert not health.up and health.reason == "Read-only file system: /x"
    samples = {(s.name, s.labels.get("operation")): s.value for f in health.collect() for s in f.samples}
    assert samples[("clary_exporter_storage_up", None)] == 0
    assert samples[("clary_exporter_storage_errors_total", "feedback")] == 1
    assert samples[("clary_exporter_storage_errors_total", "retention")] == 1
    assert [r.getMessage() for r in caplog.records].count(
        "storage unavailable; the API answers 503 and /readyz is not ready until it works again") == 1
    health.recovered()
    assert health.up and health.reason is None


def test_describe_says_what_happened_in_one_line():
    locked = sqlite3.OperationalError("database is locked")
    locked.sqlite_errorname = "SQLITE_BUSY"
    assert describe(locked) == "locked by another process (database is locked)"
    assert describe(FileNotFoundError(2, "No such file or directory", "/d/clary.db")) == \
        "No such file or directory: /d/clary.db"
    assert describe(ValueError("a\nb")) == "ValueError: a"


def test_a_fault_this_machine_cannot_make_fails_the_test_rather_than_skipping_it(monkeypatch, tmp_path):
    monkeypatch.setattr(faults.shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.fail.Exception, match=r"no mount\(8\) here; the storage-fault tests run as root"), \
            faults.tmpfs(tmp_path / "mnt"):
        pass
