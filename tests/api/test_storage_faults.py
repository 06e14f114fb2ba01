"""Storage that fails while the exporter runs: JSON 503, /readyz 503 with the reason, /metrics keeps serving,
and everything comes back once the disk works again.

Each fault is real (tests/storage_faults.py). Recovery is driven by
calling the re-check the background task runs every few seconds
(``StorageWatch.check``), so no test waits on a timer.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.api.app import INGEST as INGEST_KEY
from exporter.instrument.error_report import fingerprint
from exporter.server.app import create_app
from exporter.store.health import StorageError
from tests import storage_faults as faults
from tests.api_helpers import ADMIN, HASH, INGEST, app_client, database, make_config

pytestmark = pytest.mark.sqlite_only  # about SQLite files themselves: on SQLite whatever CLARY_TEST_STORE says

ALICE = {"X-API-Key": "key-lite-alice"}
FEEDBACK = {"type": "general", "rating": 4, "text": "hello"}
DB_FILES = ("clary.db", "clary.db-wal", "clary.db-shm")


@pytest.fixture
def registry():
    return CollectorRegistry()


async def _storage_up(client) -> float:
    text = await (await client.get("/metrics")).text()
    (line,) = [line for line in text.splitlines() if line.startswith("clary_exporter_storage_up ")]
    return float(line.split()[1])


DOWN_ERROR = {"type": "error", "tier": "lite", "error_id": "while-down", "error_type": "OSError", "route": "/x"}


async def _before_the_fault(client) -> None:
    """Rows for the privacy operations to change: alice's feedback, bob's opt-out."""
    assert (await client.post("/api/v1/feedback", headers=ALICE, json=FEEDBACK)).status == 201
    assert (await client.post("/api/v1/users/bob/opt-out", headers=ADMIN)).status == 200
    # And an error group to resolve.
    await client.post("/api/v1/events", headers=INGEST, json={"events": [{**DOWN_ERROR, "error_id": "before",
                                                                             "error_type": "KeyError"}]})
    assert (await client.get("/api/v1/errors/before", headers=ADMIN)).status == 200


async def assert_down(client, cause: str, reads_fail: bool = True) -> None:
    """Every endpoint that needs the store answers JSON 503; the probes and /metrics say why and keep serving.

    ``reads_fail``: False where the file can still be read (read-only, full, locked by a writer).
    """
    requests = [("POST", "/api/v1/feedback", ALICE, FEEDBACK), ("GET", "/api/v1/feedback", ADMIN, None),
                ("GET", "/api/v1/feedback?format=csv", ADMIN, None), ("DELETE", "/api/v1/users/alice", ADMIN, None),
                ("POST", "/api/v1/users/carol/opt-out", ADMIN, None), ("POST", "/api/v1/users/bob/opt-in", ADMIN, None)]
    requests.append(("GET", "/api/v1/feedback/insights", ADMIN, None))
    requests += [("GET", "/api/v1/errors", ADMIN, None),
                 ("POST", f"/api/v1/errors/groups/{fingerprint('KeyError', '')}/resolve", ADMIN, None)]
    for method, path, headers, body in requests:
        resp = await client.request(method, path, headers=headers, json=body)
        if method == "GET" and not reads_fail:
            assert resp.status == 200, (path, await resp.text())
            continue
        assert (resp.status, resp.content_type) == (503, "application/json"), (method, path, await resp.text())
        assert (await resp.json())["error"] == "storage_unavailable"
        assert resp.headers["Retry-After"] == "5"
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert cause in (await ready.json())["reason"]
    assert (await client.get("/healthz")).status == 200
    assert await _storage_up(client) == 0
    # Events need no storage: still accepted.
    resp = await client.post("/api/v1/events", headers=INGEST, json={"events": [
        {"type": "user_action", "tier": "lite", "action": "upload", "user_id": "dave"}, DOWN_ERROR]})
    assert (resp.status, (await resp.json())["accepted"]) == (200, 2)


async def assert_recovers(client, app) -> None:
    api = app[INGEST_KEY]
    assert await api.storage.check() is True
    assert (await client.get("/readyz")).status == 200
    assert await _storage_up(client) == 1
    assert (await client.post("/api/v1/feedback", headers=ALICE, json=FEEDBACK)).status == 201
    # Activity buffered while storage was down was kept and is stored now.
    await api.flush_activity()
    assert {row[3] for row in database(app[INGEST_KEY].store.db.path.parent).activity(HASH("dave"))} == {"upload"}
    # So was the error record that arrived meanwhile.
    assert (await client.get(f"/api/v1/errors/{DOWN_ERROR['error_id']}", headers=ADMIN)).status == 200


def _backup(data_dir: Path) -> Path:
    backup = data_dir.parent / f"{data_dir.name}-backup.db"
    conn = sqlite3.connect(data_dir / "clary.db")
    conn.execute(f"VACUUM INTO '{backup}'")
    conn.close()
    return backup


async def test_a_deleted_database_is_503_until_it_is_restored(aiohttp_client, tmp_path, registry):
    app, client = await app_client(aiohttp_client, tmp_path, registry)
    await _before_the_fault(client)
    backup = _backup(tmp_path)
    for name in DB_FILES:
        (tmp_path / name).unlink(missing_ok=True)
    await assert_down(client, "No such file or directory")
    assert not await app[INGEST_KEY].storage.check()  # not recreated empty: it held opt-outs
    assert "no database at" in (await (await client.get("/readyz")).json())["reason"]
    shutil.copy(backup, tmp_path / "clary.db")
    await assert_recovers(client, app)
    assert database(tmp_path).count("feedback") == 2  # the restored one and the new one
    assert (await client.post("/api/v1/users/bob/opt-in", headers=ADMIN)).status == 200  # the restored opt-out


async def test_a_replaced_database_is_503_until_the_recheck_opens_the_new_file(aiohttp_client, tmp_path, registry):
    app, client = await app_client(aiohttp_client, tmp_path, registry)
    await _before_the_fault(client)
    os.replace(_backup(tmp_path), tmp_path / "clary.db")
    await assert_down(client, "replaced while open")
    await assert_recovers(client, app)


async def test_a_read_only_database_is_503_and_the_probe_notices_it_without_traffic(aiohttp_client, tmp_path,
                                                                                    registry):
    app, client = await app_client(aiohttp_client, tmp_path, registry)
    await _before_the_fault(client)
    # Not the -shm file: SQLite maps it into memory, and a write to an immutable mapping is SIGBUS, not an error.
    files = [tmp_path / "clary.db", tmp_path / "clary.db-wal"]
    with faults.immutable(*files):
        assert await app[INGEST_KEY].storage.check() is False  # the periodic probe, no request involved
        assert (await client.get("/readyz")).status == 503
        await assert_down(client, "I/O error", reads_fail=False)
        faults.release_immutable(*files)
        await assert_recovers(client, app)


async def test_a_full_disk_is_503_until_space_is_freed(aiohttp_client, tmp_path, registry):
    with faults.tmpfs(tmp_path / "mnt", size="512k") as mnt:
        app, client = await app_client(aiohttp_client, mnt, registry)
        await _before_the_fault(client)
        filler = faults.fill(mnt)
        await assert_down(client, "disk full", reads_fail=False)
        filler.unlink()
        await assert_recovers(client, app)
        await client.close()  # before the tmpfs goes


async def test_a_database_locked_by_another_process_is_503_until_released(aiohttp_client, tmp_path, registry):
    app, client = await app_client(aiohttp_client, tmp_path, registry)
    await _before_the_fault(client)
    await app[INGEST_KEY].store.run(lambda db: db.connection().execute("PRAGMA busy_timeout = 50"))
    other = sqlite3.connect(tmp_path / "clary.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    await assert_down(client, "locked", reads_fail=False)
    other.execute("ROLLBACK")
    other.close()
    await assert_recovers(client, app)


@pytest.mark.parametrize("fault", ["regular file", "under a regular file", "directory as database", "garbage"])
async def test_a_store_that_fails_at_start_fails_the_start(aiohttp_client, tmp_path, fault):
    data_dir = {"regular file": tmp_path / "data", "under a regular file": tmp_path / "data" / "sub"}.get(fault, tmp_path)
    if fault in ("regular file", "under a regular file"):
        (tmp_path / "data").write_text("x")
    elif fault == "directory as database":
        (tmp_path / "clary.db").mkdir()
    else:
        (tmp_path / "clary.db").write_bytes(faults.GARBAGE)
    with pytest.raises(StorageError) as caught:
        await aiohttp_client(create_app(make_config(data_dir), CollectorRegistry()))
    assert "\n" not in str(caught.value) and (str(tmp_path / "data") in str(caught.value)
                                              or str(tmp_path / "clary.db") in str(caught.value))


async def test_shutdown_with_a_failing_store_completes_with_one_line(aiohttp_client, tmp_path, registry, caplog):
    _, client = await app_client(aiohttp_client, tmp_path, registry)
    files = [tmp_path / "clary.db", tmp_path / "clary.db-wal"]
    with faults.immutable(*files):
        resp = await client.post("/api/v1/events", headers=INGEST, json={"events": [
            {"type": "user_action", "tier": "lite", "action": "upload", "user_id": "dave"}]})
        assert (await resp.json())["accepted"] == 1
        await client.close()  # the app's shutdown: the last flush meets the read-only file
    lines = [r for r in caplog.records if r.name.startswith("exporter") and r.levelname in ("WARNING", "ERROR")]
    assert [r.getMessage() for r in lines] == [
        "storage unavailable; the API answers 503 and /readyz is not ready until it works again",
        "per-user activity not stored at shutdown: storage unavailable"]
    assert lines[1].fields == {"rows": 1} and not any(r.exc_info for r in caplog.records)
