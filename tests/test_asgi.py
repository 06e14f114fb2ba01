"""The pure ASGI middleware on Starlette and FastAPI apps: labels, mounts, errors, streams, disconnects.

Most tests drive the ASGI app directly (``call`` below) so that a test can
stop the client mid-stream, make ``send`` fail or cancel the application;
one test runs the app in a real uvicorn server on loopback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import uuid
from dataclasses import dataclass, field

import aiohttp
import pytest
import uvicorn
from fastapi import APIRouter, Depends, FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Host, Mount, Route, Router

from exporter.instrument.asgi import IDENTITY_SCOPE_KEY, MetricsMiddleware, get_identity
from exporter.config import ApiKey
from exporter.instrument.identity import Identity, key_table_resolver
from exporter.logs import JsonFormatter, TextFormatter
from exporter.instrument.hashing import Hasher
from exporter.instrument.recorder import Recorder

HTTP = "clary_http_requests_total"
KEYS = {
    "key-lite-3f9a1c": ApiKey(tier="lite", user="lite-user-1"),
    "key-pro-77d2e0": ApiKey(tier="professional", user="pro-user-7"),
}
LITE = {"X-API-Key": "key-lite-3f9a1c"}
PRO = {"X-API-Key": "key-pro-77d2e0"}
RAW_ID = "secret-doc-name-123"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


# --- a small ASGI client ----------------------------------------------------------


@dataclass
class Reply:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    complete: bool = False

    def json(self):
        return json.loads(self.body)


async def call(app, method: str = "GET", path: str = "/", headers: dict | None = None, *,
               on_send=None, disconnect: asyncio.Event | None = None, body: bytes = b"",
               spec_version: str = "2.4") -> Reply:
    """Run one HTTP request through ``app``; ``on_send(message)`` may block or raise."""
    raw_path = path.encode("utf-8", "surrogateescape")
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": spec_version}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path, "raw_path": raw_path, "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()],
    }
    sent_request = False

    async def receive():
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": body, "more_body": False}
        await (disconnect.wait() if disconnect is not None else asyncio.Event().wait())
        return {"type": "http.disconnect"}

    reply = Reply()

    async def send(message):
        if on_send is not None:
            await on_send(message)
        if message["type"] == "http.response.start":
            reply.status = message["status"]
            reply.headers = {k.decode(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            reply.body += message.get("body", b"")
            reply.complete = not message.get("more_body", False)

    await app(scope, receive, send)
    return reply


# --- the application under test ---------------------------------------------------------


class Handlers:
    def __init__(self):
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def item(self, request):
        return JSONResponse({"id": request.path_params.get("id"), "tier": get_identity(request).tier})

    async def fail(self, request):
        raise RuntimeError("kaboom")

    async def forbidden(self, request):
        raise HTTPException(403)

    async def teapot(self, request):
        return PlainTextResponse("short and stout", status_code=418)

    async def metrics(self, request):
        return PlainTextResponse("# nothing\n")

    async def blocked(self, request):
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return JSONResponse({"ok": True})

    async def stream(self, request):
        async def chunks():
            yield b"first;"
            self.entered.set()
            await self.release.wait()
            for i in range(3):
                yield b"chunk%d;" % i

        return StreamingResponse(chunks(), media_type="text/plain")

    async def broken_stream(self, request):
        async def chunks():
            yield b"first;"
            raise RuntimeError("failed mid-stream")

        return StreamingResponse(chunks(), media_type="text/plain")

    async def options(self, request):
        return PlainTextResponse("", headers={"Allow": "GET, OPTIONS"})


async def raw_asgi(scope, receive, send):
    await PlainTextResponse("raw")(scope, receive, send)


def build_app(rec: Recorder, handlers: Handlers) -> Starlette:
    h = handlers
    nested = Starlette(routes=[Mount("/inner", routes=[Route("/x/{id}", h.item)])])
    app = Starlette(routes=[
        Route("/items/{id}", h.item),
        Route("/typed/{id:int}", h.item),
        Route("/items/{id}/fail", h.fail, methods=["POST"]),
        Route("/forbidden", h.forbidden),
        Route("/teapot", h.teapot),
        Route("/metrics", h.metrics),
        Route("/blocked", h.blocked),
        Route("/stream", h.stream),
        Route("/broken-stream", h.broken_stream),
        Route("/options", h.options, methods=["GET", "OPTIONS"]),
        Mount("/sub", routes=[Route("/items/{id}", h.item)]),
        Mount("/users/{uid}", routes=[Route("/docs/{id}", h.item)]),
        Mount("/v2", app=nested),
        Mount("/static", app=raw_asgi),
        Host("api.example.com", app=Router([Route("/hosted/{id}", h.item)])),
    ])
    app.add_middleware(MetricsMiddleware, recorder=rec, resolver=key_table_resolver(KEYS))
    return app


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def rec(registry):
    return Recorder(registry, Hasher("asgi-test-secret-0123"))


@pytest.fixture
def handlers():
    return Handlers()


@pytest.fixture
def app(rec, handlers):
    return build_app(rec, handlers)


def requests(registry) -> dict[tuple[str, str, str, str], float]:
    """{(tier, method, route, code): count} for every non-zero request series."""
    return {
        (s.labels["tier"], s.labels["method"], s.labels["route"], s.labels["code"]): s.value
        for f in registry.collect()
        for s in f.samples
        if s.name == HTTP and s.value
    }


def in_flight(registry) -> float:
    return registry.get_sample_value("clary_http_requests_in_flight")


async def eventually(predicate, timeout: float = 5.0):
    async def poll():
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


# --- route templates ----------------------------------------------------------------------


async def test_route_label_is_the_template_not_the_raw_path(app, registry):
    for raw in ("1", "2", RAW_ID):
        reply = await call(app, "GET", f"/items/{raw}", LITE)
        assert reply.status == 200 and reply.json() == {"id": raw, "tier": "lite"}
    assert (await call(app, "GET", "/typed/42", PRO)).status == 200
    assert requests(registry) == {
        ("lite", "GET", "/items/{id}", "200"): 3,
        ("professional", "GET", "/typed/{id}", "200"): 1,
    }
    assert registry.get_sample_value(
        "clary_http_request_duration_seconds_count", {"tier": "lite", "method": "GET", "route": "/items/{id}"}) == 3
    assert RAW_ID not in generate_latest(registry).decode()


@pytest.mark.parametrize(
    ("path", "headers", "template"),
    [
        (f"/sub/items/{RAW_ID}", {}, "/sub/items/{id}"),
        (f"/users/u-9/docs/{RAW_ID}", {}, "/users/{uid}/docs/{id}"),
        (f"/v2/inner/x/{RAW_ID}", {}, "/v2/inner/x/{id}"),
        (f"/static/css/{RAW_ID}.css", {}, "/static/{path}"),
        (f"/hosted/{RAW_ID}", {"Host": "api.example.com"}, "/hosted/{id}"),
    ],
)
async def test_route_template_inside_mounts_sub_apps_and_hosts(app, registry, path, headers, template):
    for _ in range(2):  # the second request takes the cached template
        assert (await call(app, "GET", path, {**PRO, **headers})).status == 200
    assert requests(registry) == {("professional", "GET", template, "200"): 2}


async def test_unmatched_paths_wrong_methods_and_redirects(app, registry):
    assert (await call(app, "GET", f"/nothing/{RAW_ID}")).status == 404
    assert (await call(app, "GET", f"/sub/{RAW_ID}")).status == 404  # mount matched, no route inside
    assert (await call(app, "GET", "/typed/not-a-number")).status == 404
    assert (await call(app, "POST", "/items/1")).status == 405
    assert (await call(app, "PROPFIND", "/items/1")).status == 405
    assert (await call(app, "GET", "/items/1/")).status == 307  # redirect_slashes
    assert requests(registry) == {
        ("unknown", "GET", "unmatched", "404"): 3,
        ("unknown", "POST", "unmatched", "405"): 1,
        ("unknown", "other", "unmatched", "405"): 1,
        ("unknown", "GET", "unmatched", "307"): 1,
    }
    assert RAW_ID not in generate_latest(registry).decode()


async def test_head_and_options(app, registry):
    assert (await call(app, "HEAD", "/items/7", LITE)).status == 200
    assert (await call(app, "OPTIONS", "/options", LITE)).status == 200
    assert (await call(app, "OPTIONS", "/items/7", LITE)).status == 405
    assert requests(registry) == {
        ("lite", "HEAD", "/items/{id}", "200"): 1,
        ("lite", "OPTIONS", "/options", "200"): 1,
        ("lite", "OPTIONS", "unmatched", "405"): 1,
    }


async def test_same_route_object_under_two_mounts_is_told_apart_by_path(rec, registry, handlers):
    shared = Route("/items/{id}", handlers.item)
    app = Starlette(routes=[Mount("/a", routes=[shared]), Mount("/b/{tenant}", routes=[shared])])
    app.add_middleware(MetricsMiddleware, recorder=rec, resolver=key_table_resolver(KEYS))
    for path in ("/a/items/1", "/b/acme/items/2", "/b/other/items/3", "/a/items/4"):
        assert (await call(app, "GET", path)).status == 200
    assert requests(registry) == {
        ("unknown", "GET", "/a/items/{id}", "200"): 2,
        ("unknown", "GET", "/b/{tenant}/items/{id}", "200"): 2,
    }


async def test_fastapi_routers_prefixes_and_identity_dependency(rec, registry):
    router = APIRouter(prefix="/api/v1")

    @router.get("/documents/{doc_id}")
    async def document(doc_id: int, identity: Identity = Depends(get_identity)):
        return {"doc": doc_id, "tier": identity.tier}

    @router.post("/documents")
    async def upload():
        return {"ok": True}

    app = FastAPI()
    app.include_router(router)
    app.add_middleware(MetricsMiddleware, recorder=rec, resolver=key_table_resolver(KEYS))
    reply = await call(app, "GET", "/api/v1/documents/12", PRO)
    assert reply.status == 200 and reply.json() == {"doc": 12, "tier": "professional"}
    assert (await call(app, "GET", "/api/v1/documents/not-int", PRO)).status == 422
    assert (await call(app, "POST", "/api/v1/documents", LITE)).status == 200
    assert (await call(app, "GET", "/api/v1/nothing", LITE)).status == 404
    assert requests(registry) == {
        ("professional", "GET", "/api/v1/documents/{doc_id}", "200"): 1,
        ("professional", "GET", "/api/v1/documents/{doc_id}", "422"): 1,
        ("lite", "POST", "/api/v1/documents", "200"): 1,
        ("lite", "GET", "unmatched", "404"): 1,
    }


# --- tiers, identity ------------------------------------------------------------------------


async def test_tier_from_api_key_and_identity_in_scope(app, registry):
    await call(app, "GET", "/items/1")
    await call(app, "GET", "/items/1", {"X-API-Key": "not-a-key"})
    await call(app, "GET", "/items/1", {"X-API-Key": ""})
    assert (await call(app, "GET", "/items/1", PRO)).json()["tier"] == "professional"
    assert (await call(app, "GET", "/items/1", {"x-api-key": "key-lite-3f9a1c"})).json()["tier"] == "lite"
    assert requests(registry) == {
        ("unknown", "GET", "/items/{id}", "200"): 3,
        ("professional", "GET", "/items/{id}", "200"): 1,
        ("lite", "GET", "/items/{id}", "200"): 1,
    }
    assert registry.get_sample_value("clary_active_users", {"tier": "professional", "window": "5m"}) == 1
    assert registry.get_sample_value("clary_active_users", {"tier": "unknown", "window": "5m"}) == 0
    text = generate_latest(registry).decode()
    for secret in (*KEYS, "pro-user-7", "lite-user-1"):
        assert secret not in text
    assert get_identity({}) == Identity("unknown")
    assert get_identity({IDENTITY_SCOPE_KEY: Identity("lite", "u")}).tier == "lite"


# --- errors ---------------------------------------------------------------------------------


async def test_handler_exception_becomes_500_with_error_id_and_one_log_record(app, registry, caplog):
    caplog.set_level(logging.ERROR, logger="exporter.instrument.asgi")
    reply = await call(app, "POST", f"/items/{RAW_ID}/fail", LITE)
    assert reply.status == 500
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert set(body) == {"error", "error_id"} and body["error"] == "internal_error"
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


# --- in flight, excluded, streaming, disconnects ----------------------------------------------


async def test_in_flight_goes_up_and_back_to_zero(app, registry, handlers):
    assert in_flight(registry) == 0
    pending = asyncio.ensure_future(call(app, "GET", "/blocked"))
    await asyncio.wait_for(handlers.entered.wait(), 5)
    assert in_flight(registry) == 1
    assert requests(registry) == {}
    handlers.release.set()
    assert (await pending).status == 200
    assert in_flight(registry) == 0
    assert requests(registry) == {("unknown", "GET", "/blocked", "200"): 1}


async def test_excluded_paths_not_counted(app, registry):
    for _ in range(3):
        assert (await call(app, "GET", "/metrics")).status == 200
    assert requests(registry) == {}
    assert in_flight(registry) == 0


async def test_lifespan_and_websocket_scopes_pass_through(rec):
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope["type"])

    app = MetricsMiddleware(inner, rec, key_table_resolver(KEYS))
    await app({"type": "lifespan"}, None, None)
    await app({"type": "websocket", "path": "/ws", "headers": []}, None, None)
    assert seen == ["lifespan", "websocket"]


async def test_streamed_response_counted_once_when_it_ends(app, registry, handlers):
    pending = asyncio.ensure_future(call(app, "GET", "/stream", LITE))
    await asyncio.wait_for(handlers.entered.wait(), 5)
    assert requests(registry) == {}, "not counted while still streaming"
    assert in_flight(registry) == 1
    handlers.release.set()
    reply = await pending
    assert reply.complete and reply.body == b"first;chunk0;chunk1;chunk2;"
    assert requests(registry) == {("lite", "GET", "/stream", "200"): 1}
    assert in_flight(registry) == 0


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


async def test_send_failing_counts_499_not_an_error(app, registry, caplog):
    async def gone(message):
        if message["type"] == "http.response.body":
            raise OSError("connection reset by peer")

    with pytest.raises(OSError):
        await call(app, "GET", "/items/1", PRO, on_send=gone)
    assert requests(registry) == {("professional", "GET", "/items/{id}", "499"): 1}
    assert not [r for r in caplog.records if r.name == "exporter.instrument.asgi"]
    assert in_flight(registry) == 0


async def test_cancelled_request_counts_499(app, registry, handlers):
    pending = asyncio.ensure_future(call(app, "GET", "/blocked", PRO))
    await asyncio.wait_for(handlers.entered.wait(), 5)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    assert handlers.cancelled.is_set()
    assert requests(registry) == {("professional", "GET", "/blocked", "499"): 1}
    assert in_flight(registry) == 0


async def test_stream_abandoned_on_disconnect_counts_499(app, registry, handlers):
    disconnect = asyncio.Event()
    # Before ASGI 2.4, Starlette's StreamingResponse listens for http.disconnect, stops and returns.
    pending = asyncio.ensure_future(call(app, "GET", "/stream", LITE, disconnect=disconnect, spec_version="2.3"))
    await asyncio.wait_for(handlers.entered.wait(), 5)
    disconnect.set()
    reply = await asyncio.wait_for(pending, 5)
    assert reply.status == 200 and not reply.complete
    assert requests(registry) == {("lite", "GET", "/stream", "499"): 1}
    assert in_flight(registry) == 0


# --- exemplars -------------------------------------------------------------------------------


def openmetrics(registry) -> str:
    from prometheus_client.openmetrics.exposition import generate_latest as om_latest

    return om_latest(registry).decode()


async def test_traceparent_becomes_an_exemplar_in_openmetrics(app, registry):
    await call(app, "GET", "/items/1", {**PRO, "traceparent": TRACEPARENT})
    await call(app, "GET", "/items/2", {**LITE, "traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"})
    await call(app, "GET", "/items/3", {**LITE, "traceparent": "garbage"})
    text = openmetrics(registry)
    lines = [line for line in text.splitlines() if f'trace_id="{TRACE_ID}"' in line]
    assert len(lines) == 1
    assert lines[0].startswith('clary_http_request_duration_seconds_bucket{')
    assert 'route="/items/{id}"' in lines[0] and 'tier="professional"' in lines[0]
    assert text.count("# {") == 1, "invalid traceparent headers give no exemplar"
    assert requests(registry) == {
        ("professional", "GET", "/items/{id}", "200"): 1,
        ("lite", "GET", "/items/{id}", "200"): 2,
    }
    assert registry.get_sample_value(
        "clary_http_request_duration_seconds_count", {"tier": "lite", "method": "GET", "route": "/items/{id}"}) == 2


async def test_active_opentelemetry_span_becomes_an_exemplar(app, registry, monkeypatch):
    from opentelemetry import trace

    monkeypatch.setattr(trace, "_TRACER_PROVIDER", trace.NoOpTracerProvider())
    context = trace.SpanContext(trace_id=int(TRACE_ID, 16), span_id=0x00F067AA0BA902B7, is_remote=False,
                                trace_flags=trace.TraceFlags(1))
    with trace.use_span(trace.NonRecordingSpan(context)):
        await call(app, "GET", "/items/1", PRO)
    text = openmetrics(registry)
    assert text.count(f'# {{trace_id="{TRACE_ID}"}}') == 1


# --- a real server ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_real_uvicorn_server_streaming_and_client_going_away(app, registry, handlers):
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    serving = asyncio.ensure_future(server.serve())
    try:
        await eventually(lambda: server.started, timeout=10)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get(f"{base}/items/{RAW_ID}", headers=PRO) as resp:
                assert resp.status == 200 and (await resp.json())["tier"] == "professional"
            async with session.get(f"{base}/stream", headers=LITE) as resp:
                assert await resp.content.readexactly(6) == b"first;"
                await asyncio.wait_for(handlers.entered.wait(), 5)
                assert in_flight(registry) == 1
            # The client closed the connection mid-stream; the stream is abandoned.
        await eventually(lambda: ("lite", "GET", "/stream", "499") in requests(registry))
        assert requests(registry) == {
            ("professional", "GET", "/items/{id}", "200"): 1,
            ("lite", "GET", "/stream", "499"): 1,
        }
        assert in_flight(registry) == 0
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


async def test_stream_cut_by_the_client_counts_499_asgi_2_4(app, registry, handlers, caplog):
    """ASGI 2.4: the server's send raises OSError once the client left; Starlette turns it into ClientDisconnect."""
    from starlette.requests import ClientDisconnect

    async def cut(message):
        if message.get("body", b"").startswith(b"chunk"):
            raise OSError("client went away")

    handlers.release.set()
    with pytest.raises(ClientDisconnect):
        await call(app, "GET", "/stream", LITE, on_send=cut)
    assert requests(registry) == {("lite", "GET", "/stream", "499"): 1}
    assert not [r for r in caplog.records if r.name == "exporter.instrument.asgi"]
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


async def test_pathsend_and_zero_copy_responses_end_the_request(rec, registry):
    async def pathsend(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": "/etc/hostname"})

    async def zerocopy(scope, receive, send):
        await send({"type": "http.response.start", "status": 206, "headers": []})
        await send({"type": "http.response.zerocopysend", "file": 0, "more_body": True})
        await send({"type": "http.response.zerocopysend", "file": 0})

    app = Starlette(routes=[Mount("/files", app=pathsend), Mount("/zc", app=zerocopy)])
    app.add_middleware(MetricsMiddleware, recorder=rec, resolver=key_table_resolver(KEYS))
    for path in ("/files/a", "/zc/b"):
        await call(app, "GET", path, LITE)
    assert requests(registry) == {
        ("lite", "GET", "/files/{path}", "200"): 1,
        ("lite", "GET", "/zc/{path}", "206"): 1,
    }
