"""The ASGI middleware: handler exceptions become a JSON 500 with an error id and one redacted log record."""

from __future__ import annotations

import logging
import uuid

import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from exporter.instrument.asgi import MetricsMiddleware
from exporter.instrument.identity import key_table_resolver
from exporter.logs import JsonFormatter, TextFormatter
from tests.instrument.asgi_client import call
from tests.instrument.http_helpers import KEYS, LITE, PRO, RAW_ID, in_flight, requests


async def test_handler_exception_becomes_500_with_error_id_and_one_log_record(app, registry, caplog):
    caplog.set_level(logging.ERROR, logger="exporter.instrument.asgi")
    reply = await call(app, "POST", f"/items/{RAW_ID}/fail", LITE)
    assert reply.status == 500
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert set(body) == {"error", "error_id", "message"} and body["error"] == "internal_error"
    assert uuid.UUID(body["error_id"]).version == 4
    assert registry.get_sample_value(
        "clary_errors_total", {"tier": "lite", "error_type": "RuntimeError", "route": "/items/{id}/fail"}) == 1
    assert requests(registry) == {("lite", "POST", "/items/{id}/fail", "500"): 1}

    records = [r for r in caplog.records if r.name == "exporter.instrument.asgi"]
    assert len(records) == 1
    fields = records[0].fields
    assert fields["error_id"] == body["error_id"]
    assert (fields["error_type"], fields["error"]) == ("RuntimeError", "kaboom")
    assert (fields["route"], fields["method"], fields["tier"]) == ("/items/{id}/fail", "POST", "lite")
    assert records[0].exc_info and records[0].exc_info[0] is RuntimeError
    for rendered in (JsonFormatter().format(records[0]), TextFormatter().format(records[0])):
        assert body["error_id"] in rendered and "kaboom" in rendered
        for secret in (RAW_ID, f"/items/{RAW_ID}/fail", "key-lite-3f9a1c", "lite-user-1"):
            assert secret not in rendered
    assert in_flight(registry) == 0


async def test_each_500_gets_its_own_error_id(app, caplog):
    ids = {(await call(app, "POST", "/items/1/fail")).json()["error_id"] for _ in range(3)}
    assert len(ids) == 3
    assert {r.fields["error_id"] for r in caplog.records if r.name == "exporter.instrument.asgi"} == ids


async def test_http_exceptions_and_error_statuses_counted_with_their_code(app, registry):
    assert (await call(app, "GET", "/forbidden", PRO)).status == 403
    assert (await call(app, "GET", "/teapot")).status == 418
    assert requests(registry) == {
        ("professional", "GET", "/forbidden", "403"): 1,
        ("unknown", "GET", "/teapot", "418"): 1,
    }
    assert registry.get_sample_value(
        "clary_errors_total", {"tier": "professional", "error_type": "other", "route": "/forbidden"}) is None


async def test_wrapping_the_whole_app_counts_errors_after_starlettes_own_500(rec, registry, handlers, caplog):
    """Outside ServerErrorMiddleware the 500 is Starlette's; the count and the log record are still ours,
    and the exception Starlette re-raises after its response is not passed on (it is logged once)."""
    inner = Starlette(routes=[Route("/items/{id}/fail", handlers.fail, methods=["POST"])])
    app = MetricsMiddleware(inner, rec, key_table_resolver(KEYS))
    reply = await call(app, "POST", "/items/1/fail", PRO)
    assert reply.status == 500 and reply.body == b"Internal Server Error"
    assert requests(registry) == {("professional", "POST", "/items/{id}/fail", "500"): 1}
    assert registry.get_sample_value(
        "clary_errors_total", {"tier": "professional", "error_type": "RuntimeError", "route": "/items/{id}/fail"}) == 1
    assert len([r for r in caplog.records if r.name == "exporter.instrument.asgi"]) == 1


async def test_stream_failing_after_it_started_propagates_and_counts_500(app, registry, caplog):
    """Headers went out: no JSON 500 may follow; the exception reaches the server, which drops the connection."""
    sent: list[dict] = []

    async def record(message):
        sent.append(message)

    with pytest.raises(RuntimeError, match="failed mid-stream"):
        await call(app, "GET", "/broken-stream", LITE, on_send=record)
    assert [m["type"] for m in sent][:2] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200
    assert not any(m["type"] == "http.response.start" and m["status"] == 500 for m in sent)
    assert requests(registry) == {("lite", "GET", "/broken-stream", "500"): 1}
    assert registry.get_sample_value(
        "clary_errors_total", {"tier": "lite", "error_type": "RuntimeError", "route": "/broken-stream"}) == 1
    assert len([r for r in caplog.records if r.name == "exporter.instrument.asgi"]) == 1
    assert in_flight(registry) == 0


async def test_secrets_repeated_in_the_exception_message_are_redacted_from_the_log(rec, registry, caplog):
    caplog.set_level(logging.ERROR, logger="exporter.instrument.asgi")

    async def lookup(request):
        raise KeyError(request.headers["x-api-key"] + " " + request.url.path + "?" + request.url.query)

    app = Starlette(routes=[Route("/docs/{id}", lookup)])
    app.add_middleware(MetricsMiddleware, recorder=rec, resolver=key_table_resolver(KEYS))
    reply = await call(app, "GET", f"/docs/{RAW_ID}", PRO)
    assert reply.status == 500
    [record] = [r for r in caplog.records if r.name == "exporter.instrument.asgi"]
    assert record.fields["error_id"] == reply.json()["error_id"]
    for rendered in (JsonFormatter().format(record), TextFormatter().format(record)):
        assert "[redacted]" in rendered and "KeyError" in rendered
        for secret in ("key-pro-77d2e0", RAW_ID):
            assert secret not in rendered
