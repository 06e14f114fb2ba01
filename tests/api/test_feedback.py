"""POST/GET /api/v1/feedback: durable storage, metrics, auth, validation, listing, CSV."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest
from prometheus_client import CollectorRegistry

from exporter import demo
from exporter.api.app import INGEST as INGEST_KEY
from exporter.config import Config
from exporter.server.app import create_app
from tests import store_backend
from tests.api_helpers import ADMIN, INGEST, clary_samples, database, make_config, value

URL = "/api/v1/feedback"
ALICE = {"X-API-Key": "key-lite-alice"}
BOB = {"X-API-Key": "key-pro-bob"}
CAROL = {"X-API-Key": "key-std-carol"}


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def app(tmp_path, registry):
    return create_app(make_config(tmp_path), registry)


@pytest.fixture
async def client(aiohttp_client, app):
    return await aiohttp_client(app)


def not_http(samples: dict) -> dict:
    return {k: v for k, v in samples.items() if not k[0].startswith("clary_http_")}


async def submit(client, headers, **body):
    resp = await client.post(URL, json=body, headers=headers)
    return resp.status, await resp.json()


async def test_feedback_is_stored_with_hashed_user_and_counted(client, app, registry, tmp_path):
    status, body = await submit(client, ALICE, type="feature_request", rating=4, text="dark mode please",
                                metadata={"app_version": "2.3.1", "page": "editor"})
    assert status == 201
    assert body["urgent"] is False and len(body["id"]) == 36 and body["created_at"].endswith("Z")
    rows, cursor = database(tmp_path).list_feedback()
    assert cursor is None and len(rows) == 1
    row = rows[0]
    hasher = app[INGEST_KEY].recorder.hasher
    assert {k: row[k] for k in ("id", "tier", "type", "rating", "urgent", "text", "metadata", "user_hash")} == {
        "id": body["id"], "tier": "lite", "type": "feature_request", "rating": 4, "urgent": False,
        "text": "dark mode please", "metadata": {"app_version": "2.3.1", "page": "editor"},
        "user_hash": hasher.digest("alice"),
    }
    assert abs(row["created_at"] - time.time()) < 60
    assert value(registry, "clary_feedback_submissions_total", tier="lite", type="feature_request") == 1
    assert value(registry, "clary_feedback_rating_sum", tier="lite", type="feature_request") == 4
    assert value(registry, "clary_feedback_rating_count", tier="lite", type="feature_request") == 1
    assert value(registry, "clary_feedback_urgent_total", tier="lite") == 0
    assert value(registry, "clary_exporter_events_total", type="feedback", outcome="accepted") == 1
    raw = store_backend.stored_bytes(tmp_path)
    assert b"alice" not in raw and b"key-lite-alice" not in raw


@pytest.mark.sqlite_only
async def test_the_database_is_in_wal_mode_with_full_sync(client, tmp_path):
    await submit(client, ALICE, type="general", rating=5)
    conn = database(tmp_path).connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


@pytest.mark.parametrize("type_, rating, urgent", [
    ("bug", 1, True), ("bug", 2, True), ("bug", 3, False), ("survey", 1, False), ("general", 2, False),
])
async def test_urgent_is_a_bug_rated_two_or_lower(client, registry, type_, rating, urgent):
    status, body = await submit(client, BOB, type=type_, rating=rating, text="x")
    assert status == 201 and body["urgent"] is urgent
    assert value(registry, "clary_feedback_urgent_total", tier="professional") == (1 if urgent else 0)


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "nope"}, {"X-API-Key": ""}, INGEST, ADMIN])
async def test_unknown_api_key_is_401_and_nothing_recorded_or_stored(client, registry, tmp_path, headers):
    before = not_http(clary_samples(registry))
    status, body = await submit(client, headers, type="bug", rating=1, text="x")
    assert status == 401 and body["field"] == "X-API-Key"
    assert not_http(clary_samples(registry)) == before
    assert database(tmp_path).count("feedback") == 0


@pytest.mark.parametrize("body, field", [
    ({"type": "rant", "rating": 3}, "type"),
    ({"type": "bug", "rating": 0}, "rating"),
    ({"type": "bug", "rating": 6}, "rating"),
    ({"type": "bug", "rating": "5"}, "rating"),
    ({"type": "bug", "rating": 4.0}, "rating"),
    ({"type": "bug", "rating": True}, "rating"),
    ({"type": "bug"}, "rating"),
    ({"rating": 3}, "type"),
    ({"type": "bug", "rating": 3, "text": "x" * 4001}, "text"),
    ({"type": "bug", "rating": 3, "text": "nul\u0000byte"}, "text"),
    ({"type": "bug", "rating": 3, "metadata": {"blob": "x" * 5000}}, "metadata"),
    ({"type": "bug", "rating": 3, "metadata": {f"k{i}": i for i in range(33)}}, "metadata"),
    ({"type": "bug", "rating": 3, "metadata": [1, 2]}, "metadata"),
    ({"type": "bug", "rating": 3, "tier": "professional"}, "tier"),  # the tier comes from the key
    ({"type": "bug", "rating": 3, "user": "mallory"}, "user"),
])
async def test_invalid_feedback_is_400_naming_the_field(client, registry, tmp_path, body, field):
    status, error = await submit(client, ALICE, **body)
    assert status == 400
    assert error["error"] == "invalid_field" and error["field"] == field, error
    assert database(tmp_path).count("feedback") == 0
    assert value(registry, "clary_feedback_submissions_total", tier="lite", type="bug") == 0
    assert value(registry, "clary_exporter_events_total", type="feedback", outcome="rejected") == 1


async def test_metadata_with_nan_is_refused(client, tmp_path):
    resp = await client.post(URL, data=b'{"type": "bug", "rating": 3, "metadata": {"x": NaN}}', headers=ALICE)
    assert resp.status == 400 and (await resp.json())["field"] == "metadata"


async def test_feedback_body_over_limit_is_413(aiohttp_client, tmp_path, registry):
    client = await aiohttp_client(create_app(make_config(tmp_path, max_body_bytes=1024), registry))
    resp = await client.post(URL, json={"type": "bug", "rating": 1, "text": "x" * 2000}, headers=ALICE)
    assert resp.status == 413 and (await resp.json())["field"] == "body"
    assert database(tmp_path).count("feedback") == 0
    assert value(registry, "clary_feedback_urgent_total", tier="lite") == 0


async def test_storage_failure_is_503_and_not_counted(client, app, registry, tmp_path):
    await submit(client, ALICE, type="general", rating=5)
    conn = database(tmp_path).connection()
    conn.execute("DROP TABLE feedback")  # a broken database, from outside
    status, body = await submit(client, ALICE, type="bug", rating=1, text="lost?")
    assert status == 503 and body["error"] == "storage_unavailable"
    assert value(registry, "clary_feedback_urgent_total", tier="lite") == 0
    assert value(registry, "clary_feedback_submissions_total", tier="lite", type="bug") == 0


# --- listing ---------------------------------------------------------------------------------

async def _fill(client):
    ids = []
    for headers, type_, rating in [(ALICE, "bug", 1), (BOB, "survey", 5), (CAROL, "bug", 4), (ALICE, "general", 3),
                                   (BOB, "bug", 2)]:
        _, body = await submit(client, headers, type=type_, rating=rating, text=f"{type_} {rating}")
        ids.append(body["id"])
    return ids


async def test_list_requires_the_admin_token(client):
    for headers in ({}, INGEST, ALICE, {"Authorization": "Bearer wrong-admin-token-0000"}):
        resp = await client.get(URL, headers=headers)
        assert resp.status == 401 and (await resp.json())["field"] == "Authorization"


async def test_list_is_newest_first_and_paginated(client):
    ids = await _fill(client)
    seen, cursor, pages = [], None, 0
    while True:
        resp = await client.get(URL, params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=ADMIN)
        assert resp.status == 200
        page = await resp.json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids)) and pages == 3


async def test_list_filters_by_tier_type_and_since(client, app):
    ids = await _fill(client)

    async def listed(**params):
        resp = await client.get(URL, params=params, headers=ADMIN)
        assert resp.status == 200, await resp.text()
        return [item["id"] for item in (await resp.json())["items"]]

    assert await listed(tier="professional") == [ids[4], ids[1]]
    assert await listed(type="bug") == [ids[4], ids[2], ids[0]]
    assert await listed(type="bug", tier="lite") == [ids[0]]
    assert await listed(since="2000-01-01T00:00:00Z") == list(reversed(ids))
    assert await listed(since=str(int(time.time()) + 3600)) == []
    assert await listed(since="2099-01-01") == []


@pytest.mark.parametrize("params, field", [
    ({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"tier": "gold"}, "tier"), ({"type": "rant"}, "type"), ({"since": "yesterday"}, "since"),
    ({"cursor": "abc"}, "cursor"), ({"format": "xml"}, "format"), ({"tire": "lite"}, "tire"),
])
async def test_bad_query_parameters_are_400_naming_them(client, params, field):
    resp = await client.get(URL, params=params, headers=ADMIN)
    assert resp.status == 400
    assert (await resp.json())["field"] == field


async def test_csv_export_has_every_matching_row(client):
    ids = await _fill(client)
    await submit(client, CAROL, type="general", rating=3, text='=HYPERLINK("http://evil")', metadata={"a": 1})
    resp = await client.get(URL, params={"format": "csv", "tier": "standard"}, headers=ADMIN)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [r["type"] for r in rows] == ["general", "bug"]
    assert rows[1]["id"] == ids[2] and rows[1]["rating"] == "4" and rows[1]["urgent"] == "false"
    assert rows[0]["text"] == "'=HYPERLINK(\"http://evil\")"  # no formula in a spreadsheet
    assert json.loads(rows[0]["metadata"]) == {"a": 1}
    assert len(rows[0]["user_hash"]) == 64


async def test_csv_export_spans_many_pages(client, app, monkeypatch):
    monkeypatch.setattr("exporter.api.feedback.CSV_PAGE", 3)
    for i in range(7):
        await submit(client, ALICE, type="general", rating=5, text=f"n{i}")
    resp = await client.get(URL, params={"format": "csv"}, headers=ADMIN)
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [r["text"] for r in rows] == [f"n{i}" for i in reversed(range(7))]


async def test_empty_store_lists_nothing(client, tmp_path):
    resp = await client.get(URL, headers=ADMIN)
    assert await resp.json() == {"items": [], "next_cursor": None}
    assert database(tmp_path).count("feedback") == 0  # the file exists: created and checked at start


# --- demo mode -----------------------------------------------------------------------------

async def test_demo_mode_keys_submit_and_the_demo_admin_token_lists(aiohttp_client, tmp_path, registry):
    config = Config(demo=True, collectors={"system": False, "gpu": False}, data_dir=tmp_path)
    client = await aiohttp_client(demo.create_app(config, registry))
    resp = await client.post(URL, json={"type": "bug", "rating": 2, "text": "demo"},
                             headers={"X-API-Key": "demo-standard-key"})
    assert resp.status == 201
    assert (await client.get(URL)).status == 401  # demo mode too (tests/demo/test_admin_and_errors.py)
    resp = await client.get(URL, headers={"Authorization": f"Bearer {demo.DEMO_ADMIN_TOKEN}"})
    items = (await resp.json())["items"]
    assert [(i["tier"], i["type"], i["urgent"]) for i in items] == [("standard", "bug", True)]
    assert (await client.delete("/api/v1/users/demo-standard-user")).status == 401


async def test_demo_keys_are_refused_outside_demo_mode(client):
    status, body = await submit(client, {"X-API-Key": "demo-lite-key"}, type="bug", rating=1)
    assert status == 401


async def test_opted_out_users_feedback_is_stored_without_user(aiohttp_client, tmp_path, registry):
    config = make_config(tmp_path, opted_out_users=["alice"])
    app = create_app(config, registry)
    client = await aiohttp_client(app)
    assert (await submit(client, ALICE, type="bug", rating=1, text="anonymous"))[0] == 201
    assert (await submit(client, BOB, type="bug", rating=1, text="named"))[0] == 201
    await app[INGEST_KEY].flush_activity()
    db = database(tmp_path)
    by_text = {row["text"]: row["user_hash"] for row in db.list_feedback()[0]}
    assert by_text["anonymous"] is None
    assert by_text["named"] == app[INGEST_KEY].recorder.hasher.digest("bob")
    # Only bob has per-user activity (his feedback); alice has none.
    assert [(r[0], r[3]) for r in db.activity()] == [(by_text["named"], "feedback")]
    assert value(registry, "clary_feedback_urgent_total", tier="lite") == 1  # aggregates still count

