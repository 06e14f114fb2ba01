"""The series budget is a hard cap, whichever way the series come: events, middleware, the recorder.

A flood of random codes, methods and routes used to leave
``clary_http_requests_total`` at 14,000-16,000 series against a budget of
2,000 (``code`` never folded). Each test floods one way in, reads the
exposition and counts series per catalog family.
"""

from __future__ import annotations

import random
import string
from collections import defaultdict

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.catalog import CATALOG, METHODS, TIERS, Kind, exposed_name_index, spec
from exporter.instrument import Identity, instrument, key_table_resolver
from exporter.labels import OVERFLOW_VALUE
from tests.api_helpers import INGEST, app_client
from tests.recording_helpers import new_recorder

HTTP = "clary_http_requests_total"
OVERFLOW = "clary_exporter_label_overflow_total"
FAMILY_OF = exposed_name_index()


def series_per_family(exposition: str) -> dict[str, set[tuple]]:
    """Distinct label sets (``le`` aside) per catalog family in a text exposition."""
    found: dict[str, set[tuple]] = defaultdict(set)
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if s.name in FAMILY_OF:
                found[FAMILY_OF[s.name]].add(tuple(sorted((k, v) for k, v in s.labels.items() if k != "le")))
    return found


def assert_every_family_within_budget(exposition: str) -> dict[str, set[tuple]]:
    found = series_per_family(exposition)
    over = {name: len(labels) for name, labels in found.items() if len(labels) > spec(name).budget}
    assert not over, f"families past their budget: {over}"
    return found


def overflows(exposition: str, metric: str) -> dict[str, float]:
    return {s.labels["label"]: s.value for family in text_string_to_metric_families(exposition)
            for s in family.samples if s.name == OVERFLOW and s.labels["metric"] == metric}


def random_route(rng: random.Random) -> str:
    word = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10)))
    raw_id = rng.choice((f"{rng.getrandbits(48):x}", str(rng.randint(0, 10**9)), f"raw-user-{word}-{rng.randint(1, 99)}"))
    return rng.choice((f"/api/{word}", f"/api/{word}/{raw_id}", f"/{word}/{{id}}"))


async def test_an_event_flood_leaves_every_family_within_budget(aiohttp_client, tmp_path):
    registry = CollectorRegistry()
    _, client = await app_client(aiohttp_client, tmp_path, registry)
    rng = random.Random(19)
    for _ in range(20):
        events = [{"type": "api_call", "tier": rng.choice(TIERS), "method": rng.choice(METHODS),
                   "route": random_route(rng), "code": rng.randint(100, 599),
                   "duration_seconds": rng.random()} for _ in range(1000)]
        resp = await client.post("/api/v1/events", json={"events": events}, headers=INGEST)
        assert resp.status == 200 and (await resp.json())["accepted"] == 1000
    exposition = await (await client.get("/metrics")).text()
    found = assert_every_family_within_budget(exposition)
    assert len(found[HTTP]) > spec(HTTP).budget * 0.9  # filled up to the cap, not past it
    folded = overflows(exposition, HTTP)
    assert folded["route"] > 0 and folded["code"] > 0
    assert overflows(exposition, "clary_http_request_duration_seconds")["route"] > 0
    codes = {dict(labels)["code"] for labels in found[HTTP] if dict(labels)["route"] == OVERFLOW_VALUE}
    assert {"1xx", "2xx", "3xx", "4xx", "5xx"} <= codes
    assert "raw-user-" not in exposition
    total = sum(s.value for family in text_string_to_metric_families(exposition)
                for s in family.samples if s.name == HTTP and s.labels["route"] != "/api/v1/events")
    assert total == 20_000, "folding loses no request"


async def test_a_middleware_flood_leaves_every_family_within_budget(aiohttp_client):
    """Random paths, methods (some outside the standard seven) and status codes through ``instrument()``."""
    registry, rec = new_recorder()

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=int(request.query["status"]))

    app = web.Application()
    for template in ("/r/{a}", "/s/{b}/t", "/u"):
        app.router.add_route("*", template, answer)
    keys = {f"k-{tier}": Identity(tier, None) for tier in TIERS}
    instrument(app, rec, key_table_resolver(keys))
    client = await aiohttp_client(app)
    rng = random.Random(23)
    methods = (*METHODS, "PROPFIND", "PURGE")  # methods the HTTP parser knows, outside the standard seven
    for _ in range(3000):
        path = rng.choice((f"/r/{rng.getrandbits(32):x}", f"/s/{rng.getrandbits(32):x}/t", "/u",
                           f"/nowhere/{rng.getrandbits(32):x}"))
        status = rng.randint(200, 599)
        resp = await client.request(rng.choice(methods), path, params={"status": str(status)},
                                    headers={"X-API-Key": rng.choice((*keys, "unknown-key"))})
        resp.release()
    exposition = generate_latest(registry).decode()
    found = assert_every_family_within_budget(exposition)
    assert len(found[HTTP]) > spec(HTTP).budget * 0.9
    assert overflows(exposition, HTTP)["code"] > 0


def raw_value(rng: random.Random, label) -> object:
    """A raw value for ``label``: mostly outside its set where it has a fallback, valid where it has none."""
    if label.name == "code":
        return rng.randint(100, 599)
    if label.name == "route":
        return random_route(rng)
    if label.values is not None and (label.fallback is None or rng.random() < 0.5):
        return rng.choice(label.values)
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=12))


def test_every_family_is_capped_through_the_recorder():
    """Every catalog family the recorder owns, flooded with random label values past its budget."""
    registry, rec = new_recorder()
    rng = random.Random(29)
    for family in CATALOG:
        if family.collected or not family.labels or family.name == OVERFLOW:
            continue  # the overflow counter's labels are the catalog's own names, written by the guard only
        for _ in range(family.budget + 300):
            child = rec.metrics.child(family.name, *(raw_value(rng, label) for label in family.labels))
            if family.kind is Kind.GAUGE:
                child.set(1)
            elif family.kind is Kind.HISTOGRAM:
                child.observe(1)
            else:
                child.inc()
    exposition = generate_latest(registry).decode()
    found = assert_every_family_within_budget(exposition)
    for name in ("clary_http_requests_total", "clary_errors_total", "clary_license_usage"):
        assert spec(name).budget * 0.9 < len(found[name]) <= spec(name).budget
        assert sum(overflows(exposition, name).values()) > 0
