"""Abuse limits: feedback per API key (429 + Retry-After), urgent notifications per tier (dedupe, rate).

Issue 19, item 7: one API key submitted 1,600 feedback items in 1.7 s and
every urgent one went to every webhook.
"""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from exporter.api.app import INGEST as INGEST_KEY
from exporter.api.limits import (
    DUPLICATE,
    RATE_LIMITED,
    FeedbackLimits,
    KeyBuckets,
    UrgentGate,
)
from exporter.server.app import create_app
from tests.api_helpers import WebhookReceiver, database, make_config, value

URL = "/api/v1/feedback"
BOB = {"X-API-Key": "key-pro-bob"}
ALICE = {"X-API-Key": "key-lite-alice"}
CAROL = {"X-API-Key": "key-std-carol"}


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def receiver():
    hook = await WebhookReceiver().start()
    yield hook
    await hook.stop()


async def test_an_api_key_past_its_rate_gets_429_with_retry_after(aiohttp_client, tmp_path):
    registry = CollectorRegistry()
    app = create_app(make_config(tmp_path, feedback_rate_per_minute=6, feedback_burst=3), registry)
    clock = Clock()
    app[INGEST_KEY].limits = FeedbackLimits(app[INGEST_KEY].config, clock)
    client = await aiohttp_client(app)
    statuses = [(await client.post(URL, json={"type": "general", "rating": 5}, headers=BOB)).status for _ in range(3)]
    assert statuses == [201, 201, 201]
    resp = await client.post(URL, json={"type": "general", "rating": 5, "text": "fourth"}, headers=BOB)
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "10"  # one token at 6 a minute
    body = await resp.json()
    assert body["error"] == "rate_limited" and body["field"] == "X-API-Key"
    assert "key-pro-bob" not in await resp.text()
    # Other keys have their own buckets; the refused submission was not stored or counted.
    assert (await client.post(URL, json={"type": "general", "rating": 5}, headers=ALICE)).status == 201
    rows, _ = database(tmp_path).list_feedback()
    assert "fourth" not in [r["text"] for r in rows] and len(rows) == 4
    assert value(registry, "clary_feedback_rate_limited_total", tier="professional") == 1
    assert value(registry, "clary_feedback_rate_limited_total", tier="lite") == 0
    assert value(registry, "clary_feedback_submissions_total", tier="professional", type="general") == 3
    # Ten seconds later the bucket has a token again.
    clock.now += 10
    assert (await client.post(URL, json={"type": "general", "rating": 5}, headers=BOB)).status == 201
    assert (await client.post(URL, json={"type": "general", "rating": 5}, headers=BOB)).status == 429


async def test_unknown_keys_are_401_and_take_no_bucket(aiohttp_client, tmp_path):
    app = create_app(make_config(tmp_path, feedback_burst=1), CollectorRegistry())
    client = await aiohttp_client(app)
    for n in range(5):
        resp = await client.post(URL, json={"type": "general", "rating": 5}, headers={"X-API-Key": f"guess-{n}"})
        assert resp.status == 401
    assert app[INGEST_KEY].limits.keys._buckets == {}


def test_token_bucket_refills_at_the_rate_up_to_the_burst():
    clock = Clock()
    buckets = KeyBuckets(per_minute=30, burst=2, clock=clock)
    assert [buckets.take("k") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("k") == pytest.approx(2.0)  # 30 a minute: one token every 2 s
    clock.now += 1
    assert buckets.take("k") == pytest.approx(1.0)
    clock.now += 100  # refills to the burst, no further
    assert [buckets.take("k") for _ in range(3)][:2] == [0.0, 0.0]
    assert buckets.take("other") == 0.0
    unlimited = KeyBuckets(per_minute=0, burst=1, clock=clock)
    assert all(unlimited.take("k") == 0.0 for _ in range(1000))


async def test_urgent_fan_out_is_deduplicated_and_limited_per_tier(aiohttp_client, tmp_path, receiver):
    registry = CollectorRegistry()
    config = make_config(tmp_path, webhooks=[receiver.url], urgent_notify_limit=2, urgent_notify_window_seconds=600)
    app = create_app(config, registry)
    clock = Clock()
    app[INGEST_KEY].limits = FeedbackLimits(config, clock)
    client = await aiohttp_client(app)

    async def urgent(text, headers=BOB):
        resp = await client.post(URL, json={"type": "bug", "rating": 1, "text": text}, headers=headers)
        assert resp.status == 201 and (await resp.json())["urgent"] is True

    for text in ("export loses tables", "Export  LOSES tables ", "ｅｘｐｏｒｔ loses tables", "login broken",
                 "search is slow", "saving fails"):
        await urgent(text)
    await urgent("export loses tables", headers=CAROL)  # another tier: its own dedupe and limit
    await receiver.wait(3)
    await asyncio.sleep(0.3)  # nothing else arrives
    assert sorted((p["feedback"]["tier"], p["feedback"]["text"]) for p in receiver.received) == [
        ("professional", "export loses tables"), ("professional", "login broken"),
        ("standard", "export loses tables")]
    assert value(registry, "clary_feedback_notifications_suppressed_total", tier="professional",
                 reason="duplicate") == 2
    assert value(registry, "clary_feedback_notifications_suppressed_total", tier="professional",
                 reason="rate_limited") == 2
    assert value(registry, "clary_feedback_urgent_total", tier="professional") == 6  # all stored and counted
    assert len(database(tmp_path).list_feedback()[0]) == 7

    # A tier's next notification says how many were held back since its previous one.
    login = next(p for p in receiver.received if p["feedback"]["text"] == "login broken")
    assert login["suppressed"] == 2 and "and 2 more urgent reports from professional customers" in login["text"]
    clock.now += 601  # the window has passed: the limit and the dedupe start over
    await urgent("export loses tables")
    await receiver.wait(4)
    last = receiver.received[-1]
    assert last["feedback"]["text"] == "export loses tables" and last["suppressed"] == 2
    clock.now += 1
    await urgent("yet another")
    await receiver.wait(5)
    assert "suppressed" not in receiver.received[-1]


def test_gate_release_undoes_a_reservation():
    clock = Clock()
    gate = UrgentGate(limit=1, window=60, clock=clock)
    first = gate.admit("lite", "crash")
    assert first.send and first.reason is None
    held = gate.admit("lite", "other crash")
    assert (held.send, held.reason) == (False, RATE_LIMITED)
    gate.release(held)
    gate.release(first)  # the feedback was not stored: a retry is neither a duplicate nor over the limit
    again = gate.admit("lite", "crash")
    assert again.send and again.suppressed_before == 0
    assert (gate.admit("lite", "CRASH").reason) == DUPLICATE
    clock.now += 61
    assert gate.admit("lite", "crash").send


def test_gate_memory_is_bounded_by_the_limit():
    clock = Clock()
    gate = UrgentGate(limit=5, window=10, clock=clock)
    for n in range(10_000):
        clock.now += 0.01
        gate.admit("standard", f"report {n}")
    assert len(gate._digests) <= 5 and sum(map(len, gate._sent.values())) <= 5
