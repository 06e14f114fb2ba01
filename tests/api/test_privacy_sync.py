"""Opt-out, consent and deletion made on one replica take effect on the others within a second
(the privacy feed, exporter.api.privacy_sync): two apps on one real PostgreSQL, and the feed on SQLite."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from exporter.api.app import INGEST as INGEST_KEY
from exporter.store import privacy_feed
from exporter.store.database import Database
from tests.api_helpers import ADMIN, EXAMPLES, HASH, INGEST, app_client, database

GUARANTEE_SECONDS = 1.0


async def replicas(aiohttp_client, tmp_path, database_url, **overrides):
    """Two exporter apps (replicas A and B) on one PostgreSQL database: (client A, api A, client B, api B).

    Tests take ``database_url`` before ``aiohttp_client``: the apps stop before their database is dropped.
    """
    found = []
    for name in ("a", "b"):
        app, client = await app_client(aiohttp_client, tmp_path / name, CollectorRegistry(),
                                       database_url=database_url, **overrides)
        found += [client, app[INGEST_KEY]]
    return found


async def within(seconds: float, condition) -> float:
    """Seconds until ``condition()`` holds; fails past ``seconds``."""
    start = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - start
        assert elapsed < seconds, f"not applied within {seconds} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def action(user: str, name: str = "view") -> dict:
    return {"type": "user_action", "tier": "lite", "action": name, "user_id": user}


async def test_an_opt_out_on_one_replica_stops_tracking_on_the_other_within_a_second(
        database_url, aiohttp_client, tmp_path):
    client_a, api_a, client_b, api_b = await replicas(aiohttp_client, tmp_path, database_url)
    assert api_b.activity.track("lite", "dave", "view")  # B tracks dave before

    assert (await client_a.post("/api/v1/users/dave/opt-out", headers=ADMIN)).status == 200
    await within(GUARANTEE_SECONDS, lambda: api_b.activity.is_opted_out(HASH("dave")))

    assert api_b.activity.track("lite", "dave", "view") is False
    await client_b.post("/api/v1/events", json={"events": [action("dave", "search")]}, headers=INGEST)
    await api_b.flush_activity()
    # The one row tracked before the opt-out was stored; nothing after it.
    db = Database(url=database_url)
    assert [row[3] for row in db.activity(HASH("dave"))] == ["view"]
    db.close()


async def test_an_opt_in_on_one_replica_lifts_the_opt_out_on_the_other_but_not_a_configured_one(
        database_url, aiohttp_client, tmp_path):
    client_a, api_a, client_b, api_b = await replicas(aiohttp_client, tmp_path, database_url)
    api_b.config_opted_out.add(HASH("gus"))  # as if only B's configuration listed gus
    api_b.activity.opted_out.add(HASH("gus"))
    assert (await client_a.post("/api/v1/users/dave/opt-out", headers=ADMIN)).status == 200
    await within(GUARANTEE_SECONDS, lambda: api_b.activity.is_opted_out(HASH("dave")))

    for user in ("dave", "gus"):
        assert (await client_a.post(f"/api/v1/users/{user}/opt-in", headers=ADMIN)).status == 200
    await within(GUARANTEE_SECONDS, lambda: not api_b.activity.is_opted_out(HASH("dave")))

    assert api_b.activity.track("lite", "dave", "view")
    await within(GUARANTEE_SECONDS, lambda: api_b.privacy.last >= privacy_feed.latest(Database(url=database_url)))
    assert api_b.activity.is_opted_out(HASH("gus"))  # the feed never lifts a configured opt-out


async def test_a_consent_on_one_replica_makes_the_other_track_within_a_second(database_url, aiohttp_client,
                                                                               tmp_path):
    client_a, api_a, client_b, api_b = await replicas(aiohttp_client, tmp_path, database_url,
                                                      privacy={"consent": "opt_in"})
    assert api_b.activity.track("lite", "erin", "view") is False  # no consent yet: nothing kept on B

    resp = await client_a.post("/api/v1/users/erin/consent", json={"state": "granted", "policy_version": "v1"},
                               headers=ADMIN)
    assert resp.status == 200
    await within(GUARANTEE_SECONDS, lambda: not api_b.activity.is_opted_out(HASH("erin")))
    assert api_b.activity.track("lite", "erin", "view")

    resp = await client_a.post("/api/v1/users/erin/consent", json={"state": "withdrawn", "policy_version": "v1"},
                               headers=ADMIN)
    assert resp.status == 200
    await within(GUARANTEE_SECONDS, lambda: api_b.activity.is_opted_out(HASH("erin")))
    assert HASH("erin") not in api_b.activity.consented


async def test_a_deletion_on_one_replica_drops_what_the_other_buffered(database_url, aiohttp_client, tmp_path):
    client_a, api_a, client_b, api_b = await replicas(aiohttp_client, tmp_path, database_url)
    error = {**EXAMPLES["error"][0], "user_id": "frank"}
    events = [action("frank"), action("bob"), error]
    assert (await client_b.post("/api/v1/events", json={"events": events}, headers=INGEST)).status == 200
    api_b.backlog.fold()
    buffered = {key[0] for key in api_b.activity.pending}
    assert buffered == {HASH("frank"), HASH("bob")}  # B holds frank's activity, not yet stored

    resp = await client_a.delete("/api/v1/users/frank", headers=ADMIN)
    assert resp.status == 200
    db = Database(url=database_url)
    seq = privacy_feed.latest(db)
    assert [change.change for change in privacy_feed.since(db, 0)] == ["deleted"]
    await within(GUARANTEE_SECONDS, lambda: api_b.privacy.last >= seq)

    await api_b.flush_activity()
    await api_b.errors.write()
    frank = (HASH("frank"),)
    assert db.count("activity", "user_hash = ?", frank) == 0
    assert db.count("error_records", "user_hash = ?", frank) == 0
    assert db.count("activity", "user_hash = ?", (HASH("bob"),)) == 1  # only frank's rows went
    db.close()


@pytest.mark.sqlite_only
async def test_the_feed_is_written_with_each_change_and_purged_after_its_horizon(aiohttp_client, tmp_path):
    app, client = await app_client(aiohttp_client, tmp_path, CollectorRegistry())
    api = app[INGEST_KEY]
    start = time.time()
    for path, body in (("/api/v1/users/dave/opt-out", None), ("/api/v1/users/dave/opt-in", None),
                       ("/api/v1/users/erin/consent", {"state": "granted", "policy_version": "v1"}),
                       ("/api/v1/users/erin/consent", {"state": "withdrawn", "policy_version": "v1"})):
        assert (await client.post(path, json=body, headers=ADMIN)).status == 200
    assert (await client.delete("/api/v1/users/frank", headers=ADMIN)).status == 200

    db = database(tmp_path)
    changes = [(change.user_hash, change.change) for change in privacy_feed.since(db, 0)]
    assert changes == [(HASH("dave"), "opt_out"), (HASH("dave"), "opt_in"), (HASH("erin"), "consent_granted"),
                       (HASH("erin"), "opt_in"), (HASH("erin"), "consent_withdrawn"), (HASH("frank"), "deleted")]
    await within(GUARANTEE_SECONDS, lambda: api.privacy.last == privacy_feed.latest(db))  # its own, harmlessly

    db.purge(30, now=start + privacy_feed.HORIZON_SECONDS - 60)
    assert len(privacy_feed.since(db, 0)) == 6  # younger than the horizon: kept
    db.purge(30, now=time.time() + privacy_feed.HORIZON_SECONDS + 1)
    assert db.count("privacy_changes") == 0
    db.close()
