"""exporter.instrument.client: batching, retries that never double-count, bounded queue; the demo uses it."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter import demo
from exporter.demo import DEMO_INGEST_TOKEN
from exporter.instrument.client import EventClient, IngestError
from exporter.config import Config
from exporter.demo.traffic import DemoTraffic
from exporter.ingest.schemas import QueueLength
from exporter.server.app import create_app
from tests import support
from tests.api_helpers import EXAMPLES, INGEST_TOKEN, database, make_config, sample, value


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
async def exporter(aiohttp_server, tmp_path, registry):
    return await aiohttp_server(create_app(make_config(tmp_path), registry))


def url(server) -> str:
    return str(server.make_url("")).rstrip("/")


def queue_event(i: int) -> dict:
    return {"type": "queue_length", "queue": "ocr", "length": i}


def accepted(registry, type_: str = "queue_length") -> float:
    return value(registry, "clary_exporter_events_total", type=type_, outcome="accepted")


class Front:
    """A loopback front for the exporter that can fail, lose answers and count batches."""

    def __init__(self, target: str):
        self.target = target
        self.batches: list[int] = []
        self.ids: list[list[str]] = []  # the event ids of each batch the exporter answered, in order
        self.fail_next = 0          # answer 503 without forwarding
        self.lose_next = 0          # forward, then answer 502 (the exporter did record it)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.fail_next:
            self.fail_next -= 1
            return web.json_response({"error": "unavailable"}, status=503)
        async with aiohttp.ClientSession() as session:
            async with session.post(self.target + request.path, data=body, headers={
                    k: v for k, v in request.headers.items() if k in ("Authorization", "X-API-Key", "Content-Type")}) as resp:
                payload, status = await resp.read(), resp.status
        if request.path.endswith("/events") and status == 200:
            import json

            self.batches.append(len(json.loads(body)["events"]))
            self.ids.append([event["id"] for event in json.loads(body)["events"]])
        if self.lose_next:
            self.lose_next -= 1
            return web.Response(status=502, text="<html>bad gateway</html>")
        return web.Response(body=payload, status=status, content_type="application/json")


@pytest.fixture
async def front(aiohttp_server, exporter):
    proxy = Front(url(exporter))
    app = web.Application()
    app.router.add_post("/{tail:.*}", proxy.handle)
    server = await aiohttp_server(app)
    proxy.url = url(server)
    return proxy


async def test_events_are_sent_in_batches(front, registry):
    async with EventClient(front.url, INGEST_TOKEN, batch_size=10, flush_interval=60) as client:
        for i in range(25):
            await client.send(queue_event(i))
        assert front.batches == [10, 10] and client.queued == 5
    assert front.batches == [10, 10, 5]  # closing flushes the rest
    assert accepted(registry) == 25 and client.accepted == 25


async def test_a_partial_batch_goes_out_after_the_flush_interval(front, registry):
    client = EventClient(front.url, INGEST_TOKEN, batch_size=100, flush_interval=0.1)
    try:
        for i in range(3):
            await client.send(queue_event(i))
        for _ in range(100):
            if accepted(registry) == 3:
                break
            await asyncio.sleep(0.02)
        assert accepted(registry) == 3 and front.batches == [3]
    finally:
        await client.close()


async def test_models_are_sent_as_json(front, registry):
    async with EventClient(front.url, INGEST_TOKEN) as client:
        await client.send(QueueLength(queue="export", length=4))
        await client.send(EXAMPLES["llm_call"][0])
    assert value(registry, "clary_queue_length", queue="export") == 4
    assert accepted(registry, "llm_call") == 1


async def test_503_is_retried(front, registry):
    front.fail_next = 2
    async with EventClient(front.url, INGEST_TOKEN, backoff=0.01) as client:
        for i in range(5):
            await client.send(queue_event(i))
    assert accepted(registry) == 5 and front.batches == [5]


async def test_a_lost_answer_is_retried_without_double_counting(front, registry):
    front.lose_next = 1  # the exporter records the batch, the client never hears it
    async with EventClient(front.url, INGEST_TOKEN, backoff=0.01) as client:
        for i in range(5):
            await client.send({**EXAMPLES["feature_used"][0]})
    assert front.batches == [5, 5]  # sent twice...
    assert value(registry, "clary_feature_uses_total", tier="standard", feature="translation", outcome="failure") == 5
    assert accepted(registry, "feature_used") == 5  # ...counted once
    assert (client.accepted, client.duplicates) == (0, 5)


async def test_a_4xx_is_not_retried(front, registry):
    client = EventClient(front.url, "wrong-token-0123456789", backoff=0.01)
    await client.send(queue_event(1))
    with pytest.raises(IngestError) as info:
        await client.close()
    assert info.value.status == 401 and "Authorization" in str(info.value)
    assert front.batches == [] and accepted(registry) == 0


async def test_rejected_items_are_reported(front, registry):
    async with EventClient(front.url, INGEST_TOKEN) as client:
        await client.send(queue_event(1))
        await client.send({"type": "queue_length", "queue": "ocr"})
    assert (client.accepted, client.rejected) == (1, 1)
    assert client.errors[0]["field"] == "length"


async def test_unreachable_exporter_keeps_the_batch_for_later(aiohttp_server, tmp_path, registry):
    port = support.free_port()
    client = EventClient(f"http://{support.LOOPBACK}:{port}", INGEST_TOKEN, retries=1, backoff=0.01,
                         flush_interval=60)
    for i in range(3):
        await client.send(queue_event(i))
    with pytest.raises(IngestError) as info:
        await client.flush()
    assert info.value.status is None and client.queued == 3
    await aiohttp_server(create_app(make_config(tmp_path), registry), port=port)
    await client.close()
    assert accepted(registry) == 3 and client.queued == 0


async def test_a_batch_undelivered_after_every_retry_is_resent_first_as_it_was(front, registry):
    """Kept apart, not merged with newer events: another replica recognises a retried batch only unchanged."""
    client = EventClient(front.url, INGEST_TOKEN, batch_size=4, retries=1, backoff=0.01, flush_interval=60)
    try:
        for i in range(3):
            await client.send(queue_event(i))
        front.lose_next = 2  # recorded by the exporter, every answer lost: the client gives up
        with pytest.raises(IngestError) as info:
            await client.flush()
        assert info.value.status is None and client.queued == 3
        first = front.ids[0]
        assert front.ids == [first, first]
        for i in range(3, 6):
            await client.send(queue_event(i))
        assert client.queued == 6 and len(front.ids) == 2  # 3 newer queued: under batch_size, and apart
        await client.flush()
        assert front.ids[2] == first  # the same ids in the same order, alone
        assert len(front.ids) == 4 and len(front.ids[3]) == 3 and not set(front.ids[3]) & set(first)
        assert (client.accepted, client.duplicates) == (3, 3) and accepted(registry) == 6
    finally:
        await client.close()


async def test_the_unsent_batch_stays_whole_when_the_queue_overflows(registry):
    client = EventClient(f"http://{support.LOOPBACK}:{support.free_port()}", INGEST_TOKEN, batch_size=10,
                         max_queue=5, retries=0, flush_interval=60)
    for i in range(2):
        await client.send(queue_event(i))
    with pytest.raises(IngestError):
        await client.flush()
    unsent = list(client._unsent)
    for i in range(2, 6):  # 2 unsent + 4 queued: the oldest queued one is dropped, not the unsent batch
        await client.send(queue_event(i))
    assert client._unsent == unsent and [e["length"] for e in unsent] == [0, 1]
    assert client.queued == 5 and client.dropped == 1
    assert [e["length"] for e in client._queue] == [3, 4, 5]
    await client.close(flush=False)
    assert client.dropped == 6


async def test_the_queue_is_bounded(registry):
    client = EventClient(f"http://{support.LOOPBACK}:{support.free_port()}", INGEST_TOKEN, batch_size=1000,
                         max_queue=5, flush_interval=60)
    for i in range(8):
        await client.send(queue_event(i))
    assert client.queued == 5 and client.dropped == 3
    await client.close(flush=False)
    assert client.dropped == 8


async def test_feedback_through_the_client(front, tmp_path, registry):
    client = EventClient(front.url, INGEST_TOKEN, backoff=0.01)
    try:
        front.fail_next = 1  # a 503 is retried: nothing was stored
        created = await client.feedback("key-pro-bob", "bug", 1, "from the client", {"source": "test"})
        assert created["urgent"] is True
        with pytest.raises(IngestError) as info:
            await client.feedback("key-pro-bob", "bug", 9)
        assert info.value.status == 400 and info.value.body["field"] == "rating"
    finally:
        await client.close()
    rows = database(tmp_path).list_feedback()[0]
    assert [(r["id"], r["text"]) for r in rows] == [(created["id"], "from the client")]


# --- the demo reports through the real API -------------------------------------------------------

async def test_demo_traffic_sends_events_and_feedback_through_the_api(aiohttp_client, tmp_path, registry):
    config = Config(demo=True, collectors={"system": False, "gpu": False}, data_dir=tmp_path)
    client = await aiohttp_client(demo.create_app(config, registry))
    base = str(client.make_url("")).rstrip("/")
    traffic = DemoTraffic(base, rate=1000, max_requests=300, rng=random.Random(2), ingest_token=DEMO_INGEST_TOKEN)
    stats = await asyncio.wait_for(traffic.run(), 60)
    assert stats.sent == 300  # bounded as before: ingestion rides along
    assert stats.ingest_errors == 0
    assert stats.events_queued > 0 and stats.feedback_stored > 0
    total = sum(value(registry, "clary_exporter_events_total", type=t, outcome="accepted")
                for t in ("queue_length", "api_call", "user_action", "template_used"))
    assert total == stats.events_queued
    stored = database(tmp_path).list_feedback(limit=500)[0]
    assert len(stored) == stats.feedback_stored
    assert all(row["metadata"] == {"source": "demo"} for row in stored)
    api_calls = value(registry, "clary_exporter_events_total", type="api_call", outcome="accepted")
    assert api_calls > 0
    assert sample(registry, "clary_http_requests_total", {"route": "/api/v1/exports"}) == api_calls

async def test_demo_traffic_without_a_token_does_not_ingest(aiohttp_client, tmp_path, registry):
    config = Config(demo=True, collectors={"system": False, "gpu": False}, data_dir=tmp_path)
    client = await aiohttp_client(demo.create_app(config, registry))
    traffic = DemoTraffic(str(client.make_url("")).rstrip("/"), rate=1000, max_requests=60, rng=random.Random(2))
    stats = await asyncio.wait_for(traffic.run(), 60)
    assert stats.events_queued == 0 and stats.feedback_stored == 0
    assert database(tmp_path).count("feedback") == 0 and database(tmp_path).activity() == []
