"""Shared by the HTTP integration tests (aiohttp ``instrument``/``metrics_middleware``, ASGI): keys and reads."""

from __future__ import annotations

import asyncio

from prometheus_client.openmetrics.exposition import generate_latest as om_latest

from exporter.config import ApiKey

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


def openmetrics(registry) -> str:
    return om_latest(registry).decode()
