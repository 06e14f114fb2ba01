"""The ASGI middleware: in flight, excluded paths, other scopes, streams, disconnects, cancels, a real server.

Most tests drive the app directly (tests/instrument/asgi_client.py) so that a
test can stop the client mid-stream, make ``send`` fail or cancel the
application; one runs it in a real uvicorn server on loopback.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from exporter.instrument.asgi import MetricsMiddleware
from exporter.instrument.identity import key_table_resolver
from tests import support
from tests.instrument.asgi_client import call
from tests.instrument.http_helpers import KEYS, LITE, PRO, RAW_ID, eventually, in_flight, requests


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


async def test_real_uvicorn_server_streaming_and_client_going_away(app, registry, handlers):
    port = support.free_port()
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
