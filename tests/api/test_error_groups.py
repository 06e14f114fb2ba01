"""Error records and groups: an instrumented service's 500 looked up by its error id at the exporter.

The service is a real aiohttp app using ``instrument(..., report_errors=EventClient(...))``,
served on 127.0.0.1, sending to a real exporter app on 127.0.0.1.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from exporter import demo
from exporter.config import Config
from exporter.instrument.aiohttp_middleware import IDENTITY, instrument
from exporter.instrument.client import EventClient
from exporter.instrument.hashing import Hasher
from exporter.instrument.identity import key_table_resolver
from exporter.instrument.recorder import Recorder
from tests.api_helpers import ADMIN, HASH, INGEST, INGEST_TOKEN, app_client, make_config, value

SERVICE_KEY = {"X-API-Key": "key-pro-bob"}
URL = "/api/v1/errors"


def load_document(kind: str, api_key: str) -> None:
    """The same bug, raised from two lines of one function."""
    if kind == "a":
        raise ValueError(f"no document 1234567 for carol@example.com (key {api_key})")
    raise ValueError(f"no document 7654321 for dave@example.com (key {api_key})")


async def documents(request: web.Request) -> web.Response:
    assert request[IDENTITY].tier == "professional"
    load_document(request.query.get("kind", "a"), request.headers["X-API-Key"])
    return web.json_response({})  # pragma: no cover - never reached


async def other_bug(request: web.Request) -> web.Response:
    {}["missing"]
    return web.json_response({})  # pragma: no cover


@pytest.fixture
async def exporter(aiohttp_client, tmp_path):
    registry = CollectorRegistry()
    app, client = await app_client(aiohttp_client, tmp_path, registry)
    return app, client, registry


@pytest.fixture
async def service(aiohttp_server, exporter, tmp_path):
    """An instrumented aiohttp service reporting its errors to the exporter, and a client of it."""
    _, exporter_client, _ = exporter
    base = str(exporter_client.make_url("/")).rstrip("/")
    events = EventClient(base, INGEST_TOKEN, flush_interval=0.01, retries=0)
    app = web.Application()
    app.router.add_get("/documents/{id}", documents)
    app.router.add_get("/other", other_bug)
    instrument(app, Recorder(CollectorRegistry(), Hasher("service-secret")), key_table_resolver(make_config(tmp_path).api_keys),
               report_errors=events)
    server = await aiohttp_server(app)
    try:
        yield server, events
    finally:
        await events.close()


async def fail(server: TestServer, path: str) -> str:
    """Call the service; its 500's error id."""
    async with aiohttp.ClientSession() as session, session.get(server.make_url(path), headers=SERVICE_KEY) as resp:
        body = await resp.json()
        assert resp.status == 500 and body["message"] == "contact support with this error ID"
        return body["error_id"]


async def lookup(client, error_id: str, headers: dict = ADMIN, timeout: float = 10.0) -> dict:
    """The exporter's record of ``error_id``, once the service's client has delivered it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await client.get(f"{URL}/{error_id}", headers=headers)
        if resp.status == 200:
            return await resp.json()
        assert resp.status == 404, await resp.text()
        assert asyncio.get_running_loop().time() < deadline, "the error record never arrived"
        await asyncio.sleep(0.02)


async def test_a_service_error_is_looked_up_by_its_error_id_redacted_and_grouped(exporter, service):
    _, client, registry = exporter
    server, _ = service
    first = await fail(server, "/documents/42?kind=a")
    found = await lookup(client, first)
    record, group = found["record"], found["group"]
    assert record["error_id"] == first
    assert (record["tier"], record["route"], record["error_type"]) == ("professional", "/documents/{id}", "ValueError")
    assert record["user_hash"] == HASH("bob")
    # The e-mail, the long number and the request's API key are gone from message and trace.
    for secret in ("carol@example.com", "1234567", "key-pro-bob"):
        assert secret not in record["message"] and secret not in record["trace"], secret
    assert record["message"] == "no document <redacted> for <redacted> (key <redacted>)"
    assert "load_document" in record["trace"] and len(record["message"] + record["trace"]) <= 4096
    assert (group["status"], group["count"], group["users_affected"]) == ("open", 1, 1)
    assert group["tiers"] == ["professional"] and group["routes"] == ["/documents/{id}"]

    # The same bug from another line (and another id in the message) joins the group.
    second = await fail(server, "/documents/43?kind=b")
    found = await lookup(client, second)
    assert found["record"]["fingerprint"] == record["fingerprint"]
    assert found["group"]["count"] == 2
    # Another bug is another group.
    third = await fail(server, "/other")
    other = await lookup(client, third)
    assert other["record"]["fingerprint"] != record["fingerprint"]
    assert other["record"]["error_type"] == "KeyError"

    listed = await (await client.get(URL, headers=ADMIN)).json()
    assert [(g["fingerprint"], g["count"]) for g in listed["items"]] == [
        (record["fingerprint"], 2), (other["record"]["fingerprint"], 1)]
    assert value(registry, "clary_error_groups_new_total", tier="professional") == 2
    assert value(registry, "clary_error_groups_open", tier="professional") == 2
    assert value(registry, "clary_error_group_users", tier="professional", group=record["fingerprint"]) == 1


async def test_a_resolved_group_seen_again_is_regressed(exporter, service):
    _, client, registry = exporter
    server, _ = service
    found = await lookup(client, await fail(server, "/other"))
    fingerprint = found["group"]["fingerprint"]
    resp = await client.post(f"{URL}/groups/{fingerprint}/resolve", headers=ADMIN)
    assert resp.status == 200 and (await resp.json())["status"] == "resolved"
    assert value(registry, "clary_error_groups_open", tier="professional") == 0
    resolved = await (await client.get(URL, params={"status": "resolved"}, headers=ADMIN)).json()
    assert [g["fingerprint"] for g in resolved["items"]] == [fingerprint]

    again = await lookup(client, await fail(server, "/other"))

    assert again["group"]["status"] == "regressed" and again["group"]["count"] == 2
    assert value(registry, "clary_error_group_regressions_total", tier="professional") == 1
    assert value(registry, "clary_error_groups_open", tier="professional") == 1
    listed = await (await client.get(URL, params={"status": "resolved"}, headers=ADMIN)).json()
    assert listed["items"] == []


async def test_groups_are_filtered_and_ranked_by_users_affected(exporter):
    _, client, _ = exporter
    trace = 'Traceback (most recent call last):\n  File "/srv/app/{f}.py", line {n}, in {f}\n{t}: x\n'

    def event(i, user, func, tier="lite", route="/a"):
        return {"type": "error", "tier": tier, "error_id": f"id-{i}", "error_type": "ValueError", "route": route,
                "trace": trace.format(f=func, n=i, t="ValueError"), "user_id": user, "time": 1_000_000 + i}

    batch = [event(1, "u1", "many"), event(2, "u1", "many"), event(3, "u1", "many"),
             event(4, "u1", "wide"), event(5, "u2", "wide", tier="standard", route="/b")]
    resp = await client.post("/api/v1/events", json={"events": batch}, headers=INGEST)
    assert (await resp.json())["accepted"] == 5
    await lookup(client, "id-5")  # stored after the answer (one transaction for the batch), on a store thread
    items = (await (await client.get(URL, headers=ADMIN)).json())["items"]
    # "wide" hit two users once each; "many" one user three times: users first.
    assert [(g["users_affected"], g["count"]) for g in items] == [(2, 2), (1, 3)]
    assert items[0]["tiers"] == ["lite", "standard"] and items[0]["routes"] == ["/a", "/b"]
    by = lambda **q: client.get(URL, params=q, headers=ADMIN)
    assert [g["count"] for g in (await (await by(tier="standard")).json())["items"]] == [2]
    assert [g["count"] for g in (await (await by(route="/a")).json())["items"]] == [2, 3]
    assert [g["count"] for g in (await (await by(since="1970-01-12T13:46:44Z")).json())["items"]] == [2]  # t=1000004
    assert [g["count"] for g in (await (await by(until="1970-01-12T13:46:42Z")).json())["items"]] == [3]  # t=1000002


@pytest.mark.parametrize("path, field", [
    (f"{URL}?status=closed", "status"), (f"{URL}?tier=gold", "tier"), (f"{URL}?since=yesterday", "since"),
    (f"{URL}?route=no-slash", "route"), (f"{URL}?limit=0", "limit"), (f"{URL}?colour=red", "colour"),
    (f"{URL}/bad%20id", "error_id"),
])
async def test_bad_input_is_a_json_400_naming_the_field(exporter, path, field):
    _, client, _ = exporter
    resp = await client.get(path, headers=ADMIN)
    assert resp.status == 400
    assert (await resp.json())["field"] == field


async def test_unknown_ids_are_json_404_and_the_endpoints_need_the_admin_token(exporter):
    _, client, _ = exporter
    resp = await client.get(f"{URL}/no-such-id", headers=ADMIN)
    assert resp.status == 404 and (await resp.json())["field"] == "error_id"
    resp = await client.post(f"{URL}/groups/abcdef0123456789/resolve", headers=ADMIN)
    assert resp.status == 404 and (await resp.json())["field"] == "fingerprint"
    resp = await client.post(f"{URL}/groups/NOT-HEX/resolve", headers=ADMIN)
    assert resp.status == 400 and (await resp.json())["field"] == "fingerprint"
    for method, path in (("GET", URL), ("GET", f"{URL}/x"), ("POST", f"{URL}/groups/ab/resolve")):
        for headers in ({}, INGEST):
            resp = await client.request(method, path, headers=headers)
            assert resp.status == 401, (method, path)


async def test_a_time_from_the_future_is_taken_as_arrival(exporter):
    _, client, _ = exporter
    event = {"type": "error", "tier": "lite", "error_id": "future", "error_type": "KeyError", "route": "/x",
             "time": 9e10}
    await client.post("/api/v1/events", json={"events": [event]}, headers=INGEST)
    found = await lookup(client, "future")  # stored after the answer: PostgreSQL's store threads may read first
    assert found["record"]["created_at"] < "2100"  # arrival time, not the year 4821: retention still applies


async def test_deleting_a_user_removes_their_error_records(exporter):
    _, client, _ = exporter
    events = [{"type": "error", "tier": "lite", "error_id": f"e{i}", "error_type": "KeyError", "route": "/x",
               "user_id": user} for i, user in enumerate(("alice", "alice", "bob"))]
    await client.post("/api/v1/events", json={"events": events}, headers=INGEST)
    await lookup(client, "e2")  # the batch is stored after the answer, in one transaction
    resp = await client.delete("/api/v1/users/alice", headers=ADMIN)
    assert (await resp.json())["removed"]["errors"] == 2
    assert (await client.get(f"{URL}/e0", headers=ADMIN)).status == 404
    found = await (await client.get(f"{URL}/e2", headers=ADMIN)).json()
    assert found["group"]["users_affected"] == 1 and found["group"]["count"] == 3


async def test_the_demo_boom_errors_become_records_and_groups(aiohttp_client, tmp_path):
    registry = CollectorRegistry()
    app = demo.create_app(Config(demo=True, collectors={"system": False, "gpu": False}, data_dir=tmp_path), registry)
    client = await aiohttp_client(app)
    admin = {"Authorization": f"Bearer {demo.credentials.DEMO_ADMIN_TOKEN}"}
    ids = []
    for tier in ("lite", "professional"):
        resp = await client.get("/demo/api/v1/boom", headers={"X-API-Key": f"demo-{tier}-key"})
        ids.append((await resp.json())["error_id"])
    found = await lookup(client, ids[1], admin)
    assert found["record"]["route"] == "/demo/api/v1/boom" and found["record"]["tier"] == "professional"
    assert found["group"]["count"] == 2 and found["group"]["tiers"] == ["lite", "professional"]
    assert value(registry, "clary_error_group_users", tier="lite", group=found["group"]["fingerprint"]) == 1
