"""aiohttp integrations: in flight, excluded paths, streamed responses, disconnects and cancels."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request

from tests.instrument.aiohttp_middleware.service import measured_app
from tests.instrument.http_helpers import eventually, in_flight, requests


async def test_in_flight_goes_up_and_back_to_zero(client, registry, handlers):
    assert in_flight(registry) == 0
    pending = asyncio.ensure_future(client.get("/blocked"))
    await asyncio.wait_for(handlers.entered.wait(), 5)
    assert in_flight(registry) == 1
    assert requests(registry) == {}
    handlers.release.set()
    assert (await pending).status == 200
    await eventually(lambda: requests(registry))
    assert in_flight(registry) == 0
    assert requests(registry) == {("unknown", "GET", "/blocked", "200"): 1}
    await client.post("/items/1/fail")
    assert in_flight(registry) == 0


async def test_excluded_paths_not_counted(client, registry):
    for _ in range(3):
        assert (await client.get("/metrics")).status == 200
    assert requests(registry) == {}
    assert "/metrics" not in {s.labels.get("route") for f in registry.collect() for s in f.samples}
    assert in_flight(registry) == 0


async def test_streamed_response_counted_once_when_done(client, registry, handlers):
    resp = await client.get("/stream", headers={"X-API-Key": "key-lite-3f9a1c"})
    assert resp.status == 200
    await asyncio.wait_for(handlers.entered.wait(), 5)
    assert await resp.content.readexactly(len(b"first;")) == b"first;"
    assert requests(registry) == {}, "not counted while still streaming"
    assert in_flight(registry) == 1
    handlers.release.set()
    assert await resp.read() == b"chunk0;chunk1;chunk2;"
    await eventually(lambda: requests(registry))
    assert requests(registry) == {("lite", "GET", "/stream", "200"): 1}
    assert in_flight(registry) == 0


async def test_client_disconnect_counts_499(client, registry, handlers):
    with pytest.raises(asyncio.TimeoutError):
        await client.get("/blocked", timeout=aiohttp.ClientTimeout(total=0.2))
    await asyncio.wait_for(handlers.cancelled.wait(), 5)
    await eventually(lambda: requests(registry))
    assert requests(registry) == {("unknown", "GET", "/blocked", "499"): 1}
    assert in_flight(registry) == 0


async def test_cancelled_handler_counts_499_directly(rec, registry, integration):
    async def cancelled(request):
        raise asyncio.CancelledError

    app = measured_app(integration, rec)
    app.router.add_get("/items/{id}", cancelled)
    app.on_startup.freeze()
    await app.startup()  # what a runner does before serving
    app.freeze()
    request = make_mocked_request("GET", "/items/5", headers={"X-API-Key": "key-pro-77d2e0"}, app=app)
    with pytest.raises(asyncio.CancelledError):
        await app._handle(request)  # aiohttp's dispatch: resolve, middlewares, handler
    assert requests(registry) == {("professional", "GET", "/items/{id}", "499"): 1}
    assert in_flight(registry) == 0
