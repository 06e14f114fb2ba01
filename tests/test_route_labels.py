"""``route`` label values: identifiers in a path become ``{param}``, non-templates ``other``.

The rule is :func:`exporter.labels.route_label` (documented in
docs/metrics.md, "Routes"); the guard applies it to every ``route`` value,
whichever way it arrives: ``api_call`` events, ``Recorder.http_request``,
the middlewares' router templates.
"""

from __future__ import annotations

import base64
import json

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from exporter.ingest.backlog import record_events
from exporter.ingest.decode import decode_batch
from exporter.ingest.schemas import TRACK_EVERYONE
from exporter.instrument import (
    Identity,
    MetricsMiddleware,
    instrument,
    key_table_resolver,
)
from exporter.labels import route_label
from tests.api_helpers import INGEST, app_client
from tests.instrument.asgi_client import call
from tests.recording_helpers import new_recorder

HTTP = "clary_http_requests_total"


@pytest.mark.parametrize(("raw", "expected"), [
    # Templates and route words are kept.
    ("/api/v1/documents/{id}", "/api/v1/documents/{id}"),
    ("/users/{user_id}/docs/{doc_id}", "/users/{user_id}/docs/{doc_id}"),
    ("/v2/oauth2/callback", "/v2/oauth2/callback"),
    ("/api/getUserInfo", "/api/getUserInfo"),
    ("/hash/sha256", "/hash/sha256"),
    ("/files/{name}.{ext}", "/files/{name}.{ext}"),
    ("/items/{id:int}", "/items/{id}"),  # convertors dropped, as the ASGI integration does
    ("/", "/"),
    ("/api/v1/", "/api/v1/"),
    ("unmatched", "unmatched"),
    ("other", "other"),
    # Identifiers become {param}.
    ("/users/raw-user-carol-99", "/users/{param}"),
    ("/api/v1/documents/42", "/api/v1/documents/{param}"),
    ("/users/carol@example.com/docs", "/users/{param}/docs"),
    ("/objects/3f2b1c9e-8d7a-4b6c-9e5f-1a2b3c4d5e6f", "/objects/{param}"),
    ("/objects/3f2b1c9e8d7a4b6c", "/objects/{param}"),
    ("/blobs/deadbeef", "/blobs/{param}"),
    ("/t/Zm9vYmFyYmF6cXV4cXV1eA", "/t/{param}"),  # 20+ characters
    ("/days/2024-05-01", "/days/{param}"),
    ("/u/user12345", "/u/{param}"),
    ("/k/a1b2", "/k/{param}"),
    ("/q/caf%C3%A9", "/q/{param}"),
    ("/items/{raw_user_carol_99}", "/items/{param}"),  # a placeholder named like an id
    ("/items/{", "/items/{param}"),
    # Not a route template at all: other.
    ("users/42", "other"),
    ("/a b", "other"),
    ("/search?q=carol", "other"),
    ("/a/../etc/passwd", "other"),
    ("/" + "a/" * 17, "other"),
    ("/" + "a" * 200, "other"),
    ("", "unmatched"),
])
def test_route_label(raw, expected):
    assert route_label(raw) == expected


# --- no generated identifier reaches /metrics ------------------------------------------

_WORDS = st.sampled_from(("api", "v1", "v2", "users", "documents", "files", "{id}", "exports", "oauth2"))
_IDENTIFIERS = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: u.hex),
    st.integers(0, 10**18).map(str),
    st.emails(),
    st.binary(min_size=4, max_size=32).map(bytes.hex),
    st.binary(min_size=15, max_size=48).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    st.from_regex(r"[a-z]{2,8}(-[a-z]{2,8}){0,3}[-_][0-9]{1,6}", fullmatch=True),
)


def route_values(exposition: str) -> set[str]:
    return {s.labels["route"] for family in text_string_to_metric_families(exposition)
            for s in family.samples if "route" in s.labels}


def assert_not_exposed(identifier: str, exposition: str) -> None:
    for route in route_values(exposition):
        assert identifier not in route.split("/"), route
    if len(identifier) >= 6:
        assert identifier not in exposition


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.lists(_WORDS, max_size=4), identifier=_IDENTIFIERS, suffix=st.lists(_WORDS, max_size=2))
def test_no_generated_identifier_reaches_the_exposition(prefix, identifier, suffix):
    """An id in an ingested ``api_call`` route (decoded and recorded as the events API does) never
    becomes a label value; the template words around it survive when the route is a template."""
    route = "/" + "/".join([*prefix, identifier, *suffix])
    event = {"type": "api_call", "tier": "lite", "method": "GET", "route": route, "code": 200, "duration_seconds": 0.1}
    events, _errors = decode_batch(json.dumps({"events": [event]}).encode(), 10)
    registry, rec = new_recorder()
    record_events(events, rec, TRACK_EVERYONE)
    exposition = generate_latest(registry).decode()
    assert_not_exposed(identifier, exposition)
    if events and "/" not in identifier and route_label(route) != "other":
        assert route_values(exposition) == {"/" + "/".join([*prefix, "{param}", *suffix])}


async def test_the_issue_route_through_the_events_api(aiohttp_client, tmp_path):
    registry = CollectorRegistry()
    _, client = await app_client(aiohttp_client, tmp_path, registry)
    events = [{"type": "api_call", "tier": "lite", "method": "GET", "route": route, "code": 200,
               "duration_seconds": 0.1}
              for route in ("/users/raw-user-carol-99", "/users/carol@example.com", "/users/12345")]
    resp = await client.post("/api/v1/events", json={"events": events}, headers=INGEST)
    assert resp.status == 200 and (await resp.json())["accepted"] == 3
    exposition = await (await client.get("/metrics")).text()
    for identifier in ("raw-user-carol-99", "carol@example.com", "12345"):
        assert identifier not in exposition
    assert registry.get_sample_value(HTTP, {"tier": "lite", "method": "GET", "route": "/users/{param}",
                                            "code": "200"}) == 3


async def test_middleware_templates_follow_the_same_rule(aiohttp_client):
    """Router templates pass as they are; a plain route registered with an id in its path gets ``{param}``;
    raw request paths never reach a label."""
    registry, rec = new_recorder()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/api/v1/documents/{id}", ok)
    app.router.add_get(r"/users/{user_id}/docs/{doc_id:\d+}", ok)
    app.router.add_get("/reports/2024-05-01", ok)
    instrument(app, rec, key_table_resolver({"k": Identity("lite", None)}))
    client = await aiohttp_client(app)
    for path in ("/api/v1/documents/raw-user-carol-99", "/users/carol@example.com/docs/123456",
                 "/reports/2024-05-01", "/nowhere/3f2b1c9e8d7a4b6c"):
        await client.get(path, headers={"X-API-Key": "k"})
    exposition = generate_latest(registry).decode()
    assert route_values(exposition) == {"/api/v1/documents/{id}", "/users/{user_id}/docs/{doc_id}",
                                        "/reports/{param}", "unmatched"}
    for identifier in ("raw-user-carol-99", "carol@example.com", "123456", "3f2b1c9e8d7a4b6c"):
        assert identifier not in exposition


async def test_starlette_templates_follow_the_same_rule():
    registry, rec = new_recorder()

    async def ok(request):
        return PlainTextResponse("ok")

    app = Starlette(routes=[Mount("/users/{uid}", routes=[Route("/docs/{doc_id:int}", ok)]),
                            Route("/reports/2024-05-01", ok)])
    wrapped = MetricsMiddleware(app, rec, key_table_resolver({"k": Identity("lite", None)}))
    for path in ("/users/raw-user-carol-99/docs/123456", "/reports/2024-05-01"):
        assert (await call(wrapped, "GET", path, {"X-API-Key": "k"})).status == 200
    exposition = generate_latest(registry).decode()
    assert route_values(exposition) == {"/users/{uid}/docs/{doc_id}", "/reports/{param}"}
    assert "raw-user-carol-99" not in exposition and "123456" not in exposition
