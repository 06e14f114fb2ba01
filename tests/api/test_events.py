"""POST /api/v1/events: typed events, per-item results, auth, limits, dedupe."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry

from exporter.api.app import INGEST as INGEST_KEY
from exporter.catalog import EVENT_TYPE
from exporter.ingest.dedupe import DedupeWindow
from exporter.ingest.schemas import EVENT_TYPES
from exporter.server.app import create_app
from tests.api_helpers import (ADMIN, ADMIN_TOKEN, EXAMPLES, INGEST, OTHER_INGEST_TOKEN, clary_samples, database,
                               make_config, sample, value)

URL = "/api/v1/events"


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path)


@pytest.fixture
def app(config, registry):
    return create_app(config, registry)


@pytest.fixture
async def client(aiohttp_client, app):
    return await aiohttp_client(app)


def events_total(registry, type_: str, outcome: str) -> float:
    return value(registry, "clary_exporter_events_total", type=type_, outcome=outcome)


def not_http(samples: dict) -> dict:
    """Samples minus HTTP-traffic families (a middleware may count the request itself)."""
    return {k: v for k, v in samples.items() if not k[0].startswith("clary_http_")}


def test_every_catalog_event_type_is_ingestible():
    assert set(EVENT_TYPES) == set(EVENT_TYPE.values) - {"feedback"}
    assert set(EXAMPLES) == set(EVENT_TYPES)


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
async def test_each_event_type_moves_its_metric(client, registry, event_type):
    event, (name, labels, delta) = EXAMPLES[event_type]
    before = sample(registry, name, labels)
    resp = await client.post(URL, json={"events": [event]}, headers=INGEST)
    assert resp.status == 200
    assert await resp.json() == {"accepted": 1, "rejected": 0, "duplicates": 0, "errors": []}
    assert sample(registry, name, labels) - before == delta
    assert events_total(registry, event_type, "accepted") == 1
    assert events_total(registry, event_type, "rejected") == 0


async def test_document_event_counts_its_features_and_duration(client, registry):
    event = EXAMPLES["document_processed"][0]
    await client.post(URL, json={"events": [event]}, headers=INGEST)
    for feature in ("ocr", "classification"):
        assert value(registry, "clary_feature_uses_total", tier="lite", feature=feature, outcome="success") == 1
    assert value(registry, "clary_document_processing_duration_seconds_sum", tier="lite", doc_type="pdf") == 1.5
    assert value(registry, "clary_features_per_document_sum", tier="lite") == 2


async def test_label_values_outside_the_allow_list_become_other(client, registry):
    event = {"type": "feature_blocked", "tier": "lite", "feature": "time_travel"}
    resp = await client.post(URL, json={"events": [event]}, headers=INGEST)
    assert (await resp.json())["accepted"] == 1
    assert value(registry, "clary_feature_blocked_total", tier="lite", feature="other") == 1
    assert value(registry, "clary_feature_blocked_total", tier="lite", feature="time_travel") == 0


async def test_license_keys_never_reach_a_label(client, registry):
    event = EXAMPLES["license_status"][0]
    await client.post(URL, json={"events": [event]}, headers=INGEST)
    exposition = "".join(str(s) for f in registry.collect() for s in f.samples)
    assert "LIC-0002" not in exposition
    ids = {s.labels["license"] for f in registry.collect() for s in f.samples if s.name == "clary_license_usage"}
    assert len(ids) == 1 and len(ids.pop()) == 12


async def test_mixed_batch_keeps_valid_items_and_names_each_rejected_field(client, registry):
    valid_doc = EXAMPLES["document_processed"][0]
    batch = [
        valid_doc,                                                                   # 0 ok
        {"type": "inference", "tier": "lite", "model": "ocr-fast"},                  # 1 missing duration
        EXAMPLES["queue_length"][0],                                                 # 2 ok
        {"type": "inference", "tier": "lite", "model": "ocr-fast", "outcome": "maybe",
         "duration_seconds": 0.1},                                                   # 3 bad outcome
        {"type": "teleport", "tier": "lite"},                                        # 4 unknown type
        "not an object",                                                             # 5
        {"type": "feedback", "rating": 1},                                           # 6 wrong endpoint
        {**EXAMPLES["feature_used"][0], "colour": "red"},                            # 7 unknown field
        {**EXAMPLES["license_status"][0], "usage": {"documents": -1}},               # 8 nested
        {"tier": "lite"},                                                            # 9 no type
        EXAMPLES["llm_call"][0],                                                     # 10 ok
        {**EXAMPLES["api_call"][0], "route": "/api/v1/docs/123?x=1"},                # 11 raw path, not a template
        {**EXAMPLES["api_call"][0], "code": 200.0},                                  # 12 float for int
    ]
    resp = await client.post(URL, json={"events": batch}, headers=INGEST)
    assert resp.status == 200
    body = await resp.json()
    assert (body["accepted"], body["rejected"], body["duplicates"]) == (3, 10, 0)
    got = [(e["index"], e["type"], e["field"]) for e in body["errors"]]
    assert got == [
        (1, "inference", "duration_seconds"),
        (3, "inference", "outcome"),
        (4, "other", "type"),
        (5, "other", "event"),
        (6, "feedback", "type"),
        (7, "feature_used", "colour"),
        (8, "license_status", "usage.documents"),
        (9, "other", "type"),
        (11, "api_call", "route"),
        (12, "api_call", "code"),
    ]
    assert all(e["reason"] for e in body["errors"])
    assert "POST /api/v1/feedback" in body["errors"][4]["reason"]
    assert "route template" in next(e["reason"] for e in body["errors"] if e["index"] == 11)
    # Valid items recorded, invalid ones not at all.
    assert value(registry, "clary_documents_processed_total", tier="lite", doc_type="pdf", outcome="success") == 1
    assert value(registry, "clary_queue_length", queue="ocr") == 17
    assert value(registry, "clary_inference_requests_total", tier="lite", model="ocr-fast", outcome="success") == 0
    assert value(registry, "clary_feature_uses_total", tier="standard", feature="translation", outcome="failure") == 0
    assert sample(registry, "clary_license_usage", {"tier": "standard"}) == 0
    assert value(registry, "clary_http_requests_total", tier="professional", method="POST",
                 route="/api/v1/docs/123?x=1", code="503") == 0
    # Counted per type and outcome.
    assert events_total(registry, "document_processed", "accepted") == 1
    assert events_total(registry, "inference", "rejected") == 2
    assert events_total(registry, "other", "rejected") == 3
    assert events_total(registry, "feedback", "rejected") == 1
    assert events_total(registry, "api_call", "rejected") == 2


async def test_non_finite_numbers_are_rejected_by_field(client, registry):
    body = b'{"events": [{"type": "queue_length", "queue": "ocr", "length": NaN},' \
           b' {"type": "queue_length", "queue": "ingest", "length": Infinity}, {"type": "queue_length",' \
           b' "queue": "export", "length": 3}]}'
    resp = await client.post(URL, data=body, headers=INGEST)
    result = await resp.json()
    assert resp.status == 200
    assert [(e["index"], e["field"]) for e in result["errors"]] == [(0, "length"), (1, "length")]
    assert value(registry, "clary_queue_length", queue="export") == 3
    assert value(registry, "clary_queue_length", queue="ocr") == 0


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-token-0123456789"},
    {"Authorization": f"Basic {OTHER_INGEST_TOKEN}"},
    {"Authorization": "Bearer "},
    {"Authorization": OTHER_INGEST_TOKEN},
    ADMIN,  # the admin token is not an ingest token
    {"X-API-Key": "key-lite-alice"},
])
async def test_auth_failures_record_nothing(client, registry, headers):
    before = not_http(clary_samples(registry))
    batch = {"events": [EXAMPLES["document_processed"][0], EXAMPLES["user_action"][0]]}
    resp = await client.post(URL, json=batch, headers=headers)
    assert resp.status == 401
    body = await resp.json()
    assert body["error"] == "unauthorized" and body["field"] == "Authorization"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert not_http(clary_samples(registry)) == before
    assert events_total(registry, "document_processed", "accepted") == 0


async def test_every_configured_token_is_accepted(client, registry):
    for token in (OTHER_INGEST_TOKEN,):
        resp = await client.post(URL, json={"events": [EXAMPLES["queue_length"][0]]},
                                 headers={"Authorization": f"bearer {token}"})
        assert resp.status == 200
    assert events_total(registry, "queue_length", "accepted") == 1


async def test_no_ingest_tokens_configured_refuses_everything(aiohttp_client, tmp_path, registry):
    app = create_app(make_config(tmp_path, ingest_tokens=[]), registry)
    client = await aiohttp_client(app)
    resp = await client.post(URL, json={"events": [EXAMPLES["queue_length"][0]]}, headers=INGEST)
    assert resp.status == 401
    assert "no ingest token is configured" in (await resp.json())["message"]


@pytest.mark.parametrize("body, field, fragment", [
    (b"{", "body", "Invalid JSON"),
    (b"", "body", "Invalid JSON"),
    (b"\xff\xfe{}", "body", "Invalid JSON"),
    (b'{"events": "\\ud800"}', "body", "Invalid JSON"),  # a lone surrogate never reaches a label
    (b"[1, 2]", "body", "object"),
    (b'{"events": {}}', "events", "array"),
    (b'{}', "events", "missing required field"),
    (b'{"events": [], "extra": 1}', "extra", "unknown field"),
])
async def test_malformed_bodies_are_400_naming_the_problem(client, registry, body, field, fragment):
    before = not_http(clary_samples(registry))
    resp = await client.post(URL, data=body, headers={**INGEST, "Content-Type": "application/json"})
    assert resp.status == 400
    error = await resp.json()
    assert error["field"] == field
    assert fragment.lower() in error["message"].lower()
    assert not_http(clary_samples(registry)) == before


async def test_empty_batch_is_fine(client):
    resp = await client.post(URL, json={"events": []}, headers=INGEST)
    assert resp.status == 200
    assert await resp.json() == {"accepted": 0, "rejected": 0, "duplicates": 0, "errors": []}


# --- limits: 413 and nothing half-applied -------------------------------------------

@pytest.fixture
def small(aiohttp_client, tmp_path, registry):
    async def make():
        app = create_app(make_config(tmp_path, max_body_bytes=2048, max_batch_items=5), registry)
        return await aiohttp_client(app)
    return make


def _batch(n: int, **extra) -> dict:
    return {"events": [{"type": "queue_length", "queue": "ocr", "length": i, **extra} for i in range(n)]}


async def test_body_over_limit_is_413_and_nothing_recorded(small, registry):
    client = await small()
    body = json.dumps({"events": [EXAMPLES["queue_length"][0]], "pad": "x" * 4000}).encode()
    before = not_http(clary_samples(registry))
    resp = await client.post(URL, data=body, headers=INGEST)
    assert resp.status == 413
    assert (await resp.json())["field"] == "body"
    assert not_http(clary_samples(registry)) == before


async def test_chunked_body_over_limit_is_413(small, registry):
    client = await small()
    chunk = json.dumps(EXAMPLES["queue_length"][0]).encode()

    async def stream():  # no Content-Length: the limit is enforced while reading
        yield b'{"events": ['
        for _ in range(100):
            yield chunk + b","
        yield chunk + b"]}"

    before = not_http(clary_samples(registry))
    resp = await client.post(URL, data=stream(), headers=INGEST)
    assert resp.status == 413
    assert (await resp.json())["field"] == "body"
    assert not_http(clary_samples(registry)) == before


async def test_compressed_body_is_limited_after_decompression(small, registry):
    import gzip

    client = await small()
    small_batch = gzip.compress(json.dumps(_batch(1)).encode())
    resp = await client.post(URL, data=small_batch, headers={**INGEST, "Content-Encoding": "gzip"})
    assert resp.status == 200 and (await resp.json())["accepted"] == 1
    bomb = gzip.compress(json.dumps({"events": [], "pad": " " * 100_000}).encode())
    assert len(bomb) < 2048
    resp = await client.post(URL, data=bomb, headers={**INGEST, "Content-Encoding": "gzip"})
    assert resp.status == 413 and (await resp.json())["field"] == "body"


async def test_batch_over_item_limit_is_413_and_nothing_recorded(small, registry):
    client = await small()
    before = not_http(clary_samples(registry))
    for batch in (_batch(6), {"events": _batch(5)["events"] + [{"type": "nope"}]}):
        resp = await client.post(URL, json=batch, headers=INGEST)
        assert resp.status == 413
        error = await resp.json()
        assert error["field"] == "events" and "at most 5" in error["message"]
    assert not_http(clary_samples(registry)) == before
    resp = await client.post(URL, json=_batch(5), headers=INGEST)
    assert resp.status == 200 and (await resp.json())["accepted"] == 5
    assert events_total(registry, "queue_length", "accepted") == 5


# --- dedupe ------------------------------------------------------------------------------

async def test_retried_batch_is_not_counted_twice(client, registry):
    events = [{**EXAMPLES["feature_used"][0], "id": f"evt-{i}"} for i in range(3)]
    labels = {"tier": "standard", "feature": "translation", "outcome": "failure"}
    first = await (await client.post(URL, json={"events": events}, headers=INGEST)).json()
    retry = await (await client.post(URL, json={"events": events}, headers=INGEST)).json()
    assert (first["accepted"], first["duplicates"]) == (3, 0)
    assert (retry["accepted"], retry["duplicates"]) == (0, 3)
    assert value(registry, "clary_feature_uses_total", **labels) == 3
    assert events_total(registry, "feature_used", "accepted") == 3
    # An overlapping retry: only the new event counts.
    more = [events[2], {**EXAMPLES["feature_used"][0], "id": "evt-3"}]
    body = await (await client.post(URL, json={"events": more}, headers=INGEST)).json()
    assert (body["accepted"], body["duplicates"]) == (1, 1)
    assert value(registry, "clary_feature_uses_total", **labels) == 4


async def test_duplicate_ids_inside_one_batch_count_once(client, registry):
    event = {**EXAMPLES["template_used"][0], "id": "same"}
    body = await (await client.post(URL, json={"events": [event, event, event]}, headers=INGEST)).json()
    assert (body["accepted"], body["duplicates"]) == (1, 2)
    assert value(registry, "clary_template_uses_total", tier="professional", kind="custom") == 1


async def test_events_without_id_are_counted_every_time(client, registry):
    event = EXAMPLES["template_used"][0]
    for _ in range(2):
        await client.post(URL, json={"events": [event]}, headers=INGEST)
    assert value(registry, "clary_template_uses_total", tier="professional", kind="custom") == 2


async def test_a_rejected_id_can_be_sent_again_fixed(client, registry):
    bad = {"type": "inference", "tier": "lite", "model": "ocr-fast", "id": "fix-me"}
    good = {**bad, "duration_seconds": 0.3}
    assert (await (await client.post(URL, json={"events": [bad]}, headers=INGEST)).json())["rejected"] == 1
    assert (await (await client.post(URL, json={"events": [good]}, headers=INGEST)).json())["accepted"] == 1
    assert value(registry, "clary_inference_requests_total", tier="lite", model="ocr-fast", outcome="success") == 1


def test_dedupe_window_is_bounded_in_count():
    window = DedupeWindow(max_ids=4, ttl=3600, clock=lambda: 0.0)
    window.add("a")
    window.add("b")      # current generation full (max/2): it becomes the previous one
    window.add("c")
    assert all(i in window for i in "abc") and len(window) == 3
    window.add("d")      # rotates again: a and b are forgotten
    assert "a" not in window and "b" not in window and all(i in window for i in "cd")
    for i in range(1000):
        window.add(f"x{i}")
        assert len(window) <= 4


def test_dedupe_window_forgets_by_age():
    now = [0.0]
    window = DedupeWindow(max_ids=1000, ttl=10, clock=lambda: now[0])
    window.add("a")
    now[0] = 4.9
    window.tick()
    assert "a" in window
    now[0] = 5.0         # half the ttl: a moves to the previous generation, still remembered
    window.tick()
    window.add("b")
    assert "a" in window and "b" in window
    now[0] = 10.0        # a is now ttl old: gone; b (5 s old) is kept
    window.tick()
    assert "a" not in window and "b" in window


# --- per-user state and opt-out ---------------------------------------------------------

async def test_user_events_keep_hashed_daily_activity(client, app, registry, tmp_path):
    batch = [EXAMPLES["user_action"][0], EXAMPLES["user_action"][0], EXAMPLES["session"][0]]
    await client.post(URL, json={"events": batch}, headers=INGEST)
    await app[INGEST_KEY].flush_activity()
    rows = database(tmp_path).activity()
    hasher = app[INGEST_KEY].recorder.hasher
    assert sorted((r[0], r[2], r[3], r[4]) for r in rows) == sorted([
        (hasher.digest("dave"), "lite", "export", 2),
        (hasher.digest("erin"), "standard", "session", 1),
    ])
    assert not any("dave" in str(r) or "erin" in str(r) for r in rows)
    assert value(registry, "clary_active_users", tier="lite", window="5m") == 1


async def test_opted_out_user_leaves_no_per_user_state(client, app, registry, tmp_path):
    resp = await client.post("/api/v1/users/dave/opt-out", headers=ADMIN)
    assert resp.status == 200
    batch = [EXAMPLES["user_action"][0], {**EXAMPLES["session"][0], "user_id": "dave", "tier": "lite"}]
    body = await (await client.post(URL, json={"events": batch}, headers=INGEST)).json()
    assert body["accepted"] == 2
    await app[INGEST_KEY].flush_activity()
    # Aggregates still count; nothing per user does.
    assert value(registry, "clary_user_actions_total", tier="lite", action="export") == 1
    assert value(registry, "clary_session_duration_seconds_count", tier="lite") == 1
    assert value(registry, "clary_active_users", tier="lite", window="5m") == 0
    assert database(tmp_path).activity() == []


async def test_admin_token_is_required_for_opt_out(client):
    resp = await client.post("/api/v1/users/dave/opt-out", headers=INGEST)
    assert resp.status == 401
    assert ADMIN_TOKEN not in await resp.text()
