"""Privacy operations: user deletion, opt-out/opt-in, retention purge (periodic and CLI)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from urllib.parse import quote

import pytest
from prometheus_client import CollectorRegistry

from exporter.api.app import INGEST as INGEST_KEY
from exporter.store.database import DAY, FeedbackRecord
from tests import support
from tests.api_helpers import ADMIN, HASH, INGEST, app_client, database, value

ALICE = {"X-API-Key": "key-lite-alice"}
BOB = {"X-API-Key": "key-pro-bob"}


@pytest.fixture
def registry():
    return CollectorRegistry()


async def test_delete_user_removes_every_record_of_that_user_only(aiohttp_client, tmp_path, registry):
    dead_hook = f"http://{support.LOOPBACK}:{support.free_port()}/hook"  # deliveries stay pending
    app, client = await app_client(aiohttp_client, tmp_path, registry, webhooks=[dead_hook])
    app[INGEST_KEY].notifier.base_backoff = 3600  # keep the pending rows put during the test
    for headers, body in [(ALICE, {"type": "bug", "rating": 1, "text": "a1"}),
                          (ALICE, {"type": "general", "rating": 4, "text": "a2"}),
                          (BOB, {"type": "bug", "rating": 1, "text": "b1"})]:
        assert (await client.post("/api/v1/feedback", json=body, headers=headers)).status == 201
    events = [{"type": "user_action", "tier": "lite", "action": a, "user_id": "alice"} for a in ("upload", "view")]
    events += [{"type": "session", "tier": "professional", "duration_seconds": 60, "user_id": "bob"}]
    await client.post("/api/v1/events", json={"events": events}, headers=INGEST)
    await app[INGEST_KEY].flush_activity()
    # One more for alice, still buffered in memory when the deletion arrives.
    await client.post("/api/v1/events", json={"events": [{**events[0], "action": "search"}]}, headers=INGEST)
    db = database(tmp_path)
    assert db.count("feedback") == 3 and db.count("outbox") == 2

    resp = await client.delete("/api/v1/users/alice", headers=ADMIN)

    assert resp.status == 200
    # alice: 2 feedback, 1 pending notification, activity rows feedback + upload + view + search.
    assert await resp.json() == {"removed": {"feedback": 2, "notifications": 1, "activity": 4, "errors": 0, "consents": 0}, "total": 7}
    rows = db.list_feedback()[0]
    assert [(r["text"], r["user_hash"]) for r in rows] == [("b1", HASH("bob"))]
    assert {r[0] for r in db.activity()} == {HASH("bob")}
    assert [r[1] for r in db.outbox()] == [rows[0]["id"]]
    await app[INGEST_KEY].flush_activity()
    assert db.activity(HASH("alice")) == []
    resp = await client.delete("/api/v1/users/alice", headers=ADMIN)
    assert (await resp.json())["total"] == 0
    db.close()


async def test_user_ids_with_any_characters_are_deleted(aiohttp_client, tmp_path, registry):
    app, client = await app_client(aiohttp_client, tmp_path, registry)
    user = "ann.o'neil+test@example.com ü"
    event = {"type": "user_action", "tier": "lite", "action": "view", "user_id": user}
    await client.post("/api/v1/events", json={"events": [event]}, headers=INGEST)
    resp = await client.delete(f"/api/v1/users/{quote(user, safe='')}", headers=ADMIN)
    assert (await resp.json())["removed"]["activity"] == 1


@pytest.mark.parametrize("method, path", [
    ("DELETE", "/api/v1/users/alice"), ("POST", "/api/v1/users/alice/opt-out"), ("POST", "/api/v1/users/alice/opt-in"),
])
@pytest.mark.parametrize("headers", [{}, INGEST, ALICE, {"Authorization": "Bearer not-the-admin-token"}])
async def test_privacy_operations_need_the_admin_token(aiohttp_client, tmp_path, registry, method, path, headers):
    app, client = await app_client(aiohttp_client, tmp_path, registry)
    await client.post("/api/v1/feedback", json={"type": "general", "rating": 5}, headers=ALICE)
    resp = await client.request(method, path, headers=headers)
    assert resp.status == 401 and (await resp.json())["field"] == "Authorization"
    db = database(tmp_path)
    assert db.count("feedback") == 1 and db.opted_out() == set()
    db.close()


async def test_invalid_user_id_is_400(aiohttp_client, tmp_path, registry):
    app, client = await app_client(aiohttp_client, tmp_path, registry)
    for user in ("x" * 257, quote("tab\there", safe="")):
        resp = await client.delete(f"/api/v1/users/{user}", headers=ADMIN)
        assert resp.status == 400 and (await resp.json())["field"] == "user_id"


async def test_opt_out_persists_across_restart_and_opt_in_undoes_it(aiohttp_client, tmp_path, registry):
    app, client = await app_client(aiohttp_client, tmp_path, registry)
    assert await (await client.post("/api/v1/users/alice/opt-out", headers=ADMIN)).json() == {"opted_out": True}
    await client.close()  # the app stops; a fresh one reads the opt-out back from the store

    app, client = await app_client(aiohttp_client, tmp_path, CollectorRegistry())
    assert app[INGEST_KEY].activity.is_opted_out(HASH("alice"))
    await client.post("/api/v1/feedback", json={"type": "general", "rating": 5, "text": "opted out"}, headers=ALICE)
    resp = await client.post("/api/v1/users/alice/opt-in", headers=ADMIN)
    assert await resp.json() == {"opted_out": False}
    await client.post("/api/v1/feedback", json={"type": "general", "rating": 5, "text": "opted in"}, headers=ALICE)
    rows = {r["text"]: r["user_hash"] for r in database(tmp_path).list_feedback()[0]}
    assert rows == {"opted out": None, "opted in": HASH("alice")}
    assert database(tmp_path).opted_out() == set()


async def test_opt_out_reaches_the_recorders_hook(aiohttp_client, tmp_path, registry):
    app, client = await app_client(aiohttp_client, tmp_path, registry)
    recorder = app[INGEST_KEY].recorder
    await client.post("/api/v1/users/alice/opt-out", headers=ADMIN)
    hook = recorder.is_opted_out
    assert hook(HASH("alice")) is True and hook(HASH("bob")) is False
    # The in-process recording API honours it: no active-user entry, no session state.
    recorder.user_seen("lite", "alice")
    assert value(registry, "clary_active_users", tier="lite", window="5m") == 0
    recorder.user_seen("lite", "bob")
    assert value(registry, "clary_active_users", tier="lite", window="5m") == 1
    await client.post("/api/v1/users/alice/opt-in", headers=ADMIN)
    assert hook(HASH("alice")) is False
    recorder.user_seen("lite", "alice")
    assert value(registry, "clary_active_users", tier="lite", window="5m") == 2


async def test_users_opted_out_in_config_cannot_be_opted_in_by_api(aiohttp_client, tmp_path, registry):
    app, client = await app_client(aiohttp_client, tmp_path, registry, opted_out_users=["alice"])
    resp = await client.post("/api/v1/users/alice/opt-in", headers=ADMIN)
    assert resp.status == 409 and (await resp.json())["field"] == "user_id"
    assert app[INGEST_KEY].activity.is_opted_out(HASH("alice"))


# --- retention -----------------------------------------------------------------------------------

def _seed(data_dir, now: float) -> None:
    db = database(data_dir)
    for age, text in [(0.5, "fresh"), (9, "nine-days"), (11, "eleven-days"), (100, "old")]:
        db.add_feedback(FeedbackRecord(tier="lite", type="general", rating=3, text=text, metadata=None,
                                       user_hash=HASH("alice"), urgent=False, created_at=now - age * DAY))
    today = int(now // DAY)
    db.add_activity({(HASH("alice"), today, "lite", "view"): 1, (HASH("alice"), today - 20, "lite", "view"): 1})
    db.close()


async def test_the_running_exporter_purges_on_start_and_periodically(aiohttp_client, tmp_path, registry,
                                                                     monkeypatch):
    monkeypatch.setattr("exporter.api.app.PURGE_INTERVAL_SECONDS", 0.2)
    _seed(tmp_path, time.time())
    app, client = await app_client(aiohttp_client, tmp_path, registry, retention_days=10)
    db = database(tmp_path)

    async def texts():
        return sorted(r["text"] for r in db.list_feedback()[0])

    deadline = time.monotonic() + 10
    while await texts() != ["fresh", "nine-days"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await texts() == ["fresh", "nine-days"]
    assert len(db.activity()) == 1
    # Periodic: a row that ages past the retention later goes at the next run.
    db.add_feedback(FeedbackRecord(tier="lite", type="general", rating=3, text="late", metadata=None,
                                   user_hash=None, urgent=False, created_at=time.time() - 10 * DAY - 1))
    deadline = time.monotonic() + 10
    while "late" in await texts() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await texts() == ["fresh", "nine-days"]
    db.close()


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(support.exporter_cmd(*args), capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, cwd=support.ROOT)


def test_cli_purge_removes_exactly_the_expired_rows(tmp_path):
    _seed(tmp_path, time.time())
    result = _cli("purge", "--data-dir", str(tmp_path), "--retention-days", "10")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "purged records older than 10 days: feedback=2 notifications=0 activity=1 errors=0"
    db = database(tmp_path)
    assert sorted(r["text"] for r in db.list_feedback()[0]) == ["fresh", "nine-days"]
    assert [r[1] for r in db.activity()] == [int(time.time() // DAY)]
    db.close()


def test_cli_purge_reads_retention_from_the_environment(tmp_path):
    _seed(tmp_path, time.time())
    result = _cli("purge", "--data-dir", str(tmp_path), env={"CLARY_RETENTION_DAYS": "5"})
    assert result.returncode == 0, result.stderr
    assert "feedback=3" in result.stdout
    result = _cli("purge", "--data-dir", str(tmp_path), "--retention-days", "0")
    assert result.returncode == 2 and "retention_days" in result.stderr
