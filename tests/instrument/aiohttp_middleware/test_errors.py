"""aiohttp integrations: handler exceptions become a JSON 500 with an error id and one redacted log record."""

from __future__ import annotations

import json
import logging
import uuid

import aiohttp
import pytest

from exporter.instrument.aiohttp_middleware import IDENTITY
from exporter.logs import JsonFormatter, TextFormatter
from tests.instrument.aiohttp_middleware.service import measured_app
from tests.instrument.http_helpers import RAW_ID, eventually, in_flight, requests


async def test_handler_exception_becomes_500_with_error_id_and_one_log_record(client, registry, caplog):
    caplog.set_level(logging.ERROR, logger="exporter.instrument.aiohttp_middleware")
    resp = await client.post(f"/items/{RAW_ID}/fail", headers={"X-API-Key": "key-lite-3f9a1c"})
    assert resp.status == 500
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error", "error_id", "message"} and body["error"] == "internal_error"
    assert uuid.UUID(body["error_id"]).version == 4 and str(uuid.UUID(body["error_id"])) == body["error_id"]

    assert registry.get_sample_value(
        "clary_errors_total", {"tier": "lite", "error_type": "RuntimeError", "route": "/items/{id}/fail"}) == 1
    assert requests(registry) == {("lite", "POST", "/items/{id}/fail", "500"): 1}

    records = [r for r in caplog.records if r.name == "exporter.instrument.aiohttp_middleware"]
    assert len(records) == 1
    fields = records[0].fields
    assert fields["error_id"] == body["error_id"]
    assert fields["error_type"] == "RuntimeError"
    assert fields["route"] == "/items/{id}/fail"
    assert fields["method"] == "POST"
    assert fields["tier"] == "lite"
    assert records[0].exc_info and records[0].exc_info[0] is RuntimeError
    for rendered in (json.dumps(fields), JsonFormatter().format(records[0]), TextFormatter().format(records[0])):
        assert body["error_id"] in rendered
        for secret in (RAW_ID, f"/items/{RAW_ID}/fail", "key-lite-3f9a1c", "lite-user-1"):
            assert secret not in rendered


async def test_each_500_gets_its_own_error_id(client, caplog):
    ids = set()
    for _ in range(3):
        ids.add((await (await client.post("/items/1/fail")).json())["error_id"])
    assert len(ids) == 3
    assert {r.fields["error_id"] for r in caplog.records if r.name == "exporter.instrument.aiohttp_middleware"} == ids


async def test_http_exceptions_and_returned_statuses_counted_with_their_code(client, registry):
    assert (await client.get("/forbidden", headers={"X-API-Key": "key-pro-77d2e0"})).status == 403
    assert (await client.get("/items/3/missing")).status == 404
    assert (await client.get("/teapot")).status == 418
    assert requests(registry) == {
        ("professional", "GET", "/forbidden", "403"): 1,
        ("unknown", "GET", "/items/{id}/missing", "404"): 1,
        ("unknown", "GET", "/teapot", "418"): 1,
    }
    assert registry.get_sample_value(
        "clary_errors_total", {"tier": "professional", "error_type": "other", "route": "/forbidden"}) is None
    assert in_flight(registry) == 0


async def test_stream_failing_after_it_started_drops_the_connection(client, registry, caplog):
    """Headers already went out: no second (JSON 500) response may be written into the body."""
    resp = await client.get("/broken-stream", headers={"X-API-Key": "key-lite-3f9a1c"})
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    await eventually(lambda: requests(registry))
    assert requests(registry) == {("lite", "GET", "/broken-stream", "500"): 1}
    assert registry.get_sample_value(
        "clary_errors_total", {"tier": "lite", "error_type": "RuntimeError", "route": "/broken-stream"}) == 1
    assert len([r for r in caplog.records if r.name == "exporter.instrument.aiohttp_middleware"]) == 1
    assert in_flight(registry) == 0
    assert (await client.get("/items/1")).status == 200  # the server carries on


async def test_secrets_repeated_in_the_exception_message_are_redacted_from_the_log(aiohttp_client, rec, registry,
                                                                                    caplog, integration):
    """``keys[api_key]`` raises KeyError(api_key): the log record must still not carry the key or the raw path."""
    caplog.set_level(logging.ERROR, logger="exporter.instrument.aiohttp_middleware")

    async def lookup(request):
        try:
            raise LookupError(f"no document {request.path_qs}")
        except LookupError:
            raise KeyError(request.headers["X-API-Key"]) from None

    async def chained(request):
        try:
            {}[request.headers["X-API-Key"]]
        except KeyError as exc:
            raise RuntimeError(f"lookup failed for user {request[IDENTITY].user} on {request.path}") from exc

    app = measured_app(integration, rec)
    app.router.add_get("/docs/{id}", lookup)
    app.router.add_get("/chained/{id}", chained)
    client = await aiohttp_client(app)
    resp = await client.get(f"/docs/{RAW_ID}?token=tok-4455", headers={"X-API-Key": "key-lite-3f9a1c"})
    assert resp.status == 500
    error_id = (await resp.json())["error_id"]
    assert (await client.get(f"/chained/{RAW_ID}", headers={"X-API-Key": "key-lite-3f9a1c"})).status == 500
    records = [r for r in caplog.records if r.name == "exporter.instrument.aiohttp_middleware"]
    assert len(records) == 2
    assert records[0].fields["error_id"] == error_id
    assert records[0].fields["error_type"] == "KeyError" and records[0].exc_info[0].__name__ == "KeyError"
    assert records[1].fields["error_type"] == "RuntimeError"
    for record in records:
        for rendered in (JsonFormatter().format(record), TextFormatter().format(record)):
            assert "[redacted]" in rendered
            for secret in ("key-lite-3f9a1c", "lite-user-1", RAW_ID, "tok-4455"):
                assert secret not in rendered
    json_stack = json.loads(JsonFormatter().format(records[1]))["stack"]
    assert "KeyError: '[redacted]'" in json_stack and "RuntimeError: lookup failed for user [redacted]" in json_stack
    assert registry.get_sample_value(
        "clary_errors_total", {"tier": "lite", "error_type": "KeyError", "route": "/docs/{id}"}) == 1
