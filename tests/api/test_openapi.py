"""The OpenAPI document, and hypothesis fuzzing of every operation it describes.

Requests are generated from the served document itself (a small JSON-schema
to hypothesis translation, tests/api/schema_strategies.py), then mutated: wrong types, missing and
unknown fields, arbitrary JSON, junk bytes, bad query parameters, odd user
ids, missing or wrong credentials. Whatever comes in, the API never answers
5xx, and every 4xx is JSON that names the offending field.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import quote, urlencode

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.api.models import ConsentIn, FeedbackIn
from exporter.api.openapi import openapi_document
from exporter.ingest.decode import EventBatch
from exporter.ingest.schemas import EVENT_MODELS, EVENT_TYPES
from exporter.server.app import create_app
from tests import support
from tests.api.schema_strategies import ANY_JSON, from_schema
from tests.api_helpers import ADMIN, INGEST, make_config, thread_server

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


# --- the document ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("fuzz")
    # No feedback rate limit: the fuzzer submits far more than one API key may (tested in test_feedback_limits.py).
    app = create_app(make_config(data_dir, max_batch_items=50, max_body_bytes=64 * 1024, feedback_rate_per_minute=0),
                     CollectorRegistry())
    with thread_server(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def document(server):
    status, body = support.http_get(f"{server.url}/api/v1/openapi.json")
    assert status == 200
    return json.loads(body)


def test_document_describes_every_endpoint(document):
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    assert operations == {
        ("/api/v1/events", "post"), ("/api/v1/feedback", "post"), ("/api/v1/feedback", "get"),
        ("/api/v1/feedback/insights", "get"),
        ("/api/v1/users/{user_id}", "delete"), ("/api/v1/users/{user_id}/opt-out", "post"),
        ("/api/v1/users/{user_id}/opt-in", "post"), ("/api/v1/openapi.json", "get"),
        ("/api/v1/users/{user_id}/consent", "post"), ("/api/v1/users/{user_id}/export", "get"),
        ("/api/v1/errors", "get"), ("/api/v1/errors/{error_id}", "get"),
        ("/api/v1/errors/groups/{fingerprint}/resolve", "post"),
    }
    assert document["openapi"].startswith("3.1")
    assert document["components"]["schemas"]["EventBatch"]["properties"]["events"]["maxItems"] == 50
    for path, item in document["paths"].items():
        for method, op in item.items():
            assert op["operationId"] and op["summary"] and op["responses"]
            if op.get("security"):
                assert "401" in op["responses"], (path, method)


def test_document_is_generated_from_the_handlers_models(document):
    schemas = document["components"]["schemas"]
    # Every event model is in the document, under the discriminator of the batch.
    assert {m.__name__ for m in EVENT_MODELS} <= set(schemas)
    items = schemas["EventBatch"]["properties"]["events"]["items"]
    assert set(items["discriminator"]["mapping"]) == set(EVENT_TYPES)
    assert schemas["FeedbackIn"]["properties"]["rating"] == FeedbackIn.model_json_schema()["properties"]["rating"]
    assert schemas["EventBatch"]["properties"]["events"]["items"] == \
        msgspec.json.schema(EventBatch, ref_template="#/components/schemas/{name}")["$defs"]["EventBatch"][
            "properties"]["events"]["items"]
    params = {p["name"] for p in document["paths"]["/api/v1/feedback"]["get"]["parameters"]}
    assert params == {"tier", "type", "feature", "since", "limit", "cursor", "format"}
    params = {p["name"] for p in document["paths"]["/api/v1/feedback/insights"]["get"]["parameters"]}
    assert params == {"since", "until", "tier", "limit", "format"}


def test_every_reference_resolves(document):
    refs = []

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in document["components"]["schemas"]


def test_document_changes_with_the_configured_limits(tmp_path):
    doc = openapi_document(make_config(tmp_path, max_batch_items=7, demo=False))
    assert doc["components"]["schemas"]["EventBatch"]["properties"]["events"]["maxItems"] == 7
    assert doc["paths"]["/api/v1/feedback"]["get"]["security"] == [{"adminToken": []}]


def body_strategy(document: dict, ref: str) -> st.SearchStrategy[bytes]:
    defs = document["components"]["schemas"]
    valid = from_schema({"$ref": ref}, defs, fuzz=False)
    fuzzed = from_schema({"$ref": ref}, defs, fuzz=True)
    as_json = st.one_of(valid, fuzzed, fuzzed, ANY_JSON).map(lambda v: json.dumps(v).encode())
    return st.one_of(as_json, as_json, as_json, st.binary(max_size=64))


HEADER_CHOICES = {
    "ingest": [INGEST, INGEST, INGEST, {}, {"Authorization": "Bearer wrong-token-abcdefgh"}],
    "admin": [ADMIN, ADMIN, ADMIN, {}, {"Authorization": "Basic Zm9vOmJhcg=="}, INGEST],
    "apikey": [{"X-API-Key": "key-pro-bob"}, {"X-API-Key": "key-lite-alice"}, {"X-API-Key": "key-std-carol"},
               {}, {"X-API-Key": "unknown"}],
}


def request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection(support.LOOPBACK, server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


def check(status: int, content_type: str, raw: bytes) -> dict | None:
    assert status < 500, raw[:500]
    if 400 <= status < 500:
        assert content_type.startswith("application/json"), (status, raw[:200])
        error = json.loads(raw)
        assert isinstance(error.get("field"), str) and error["field"], error
        assert error.get("error") and error.get("message"), error
        return error
    return json.loads(raw) if content_type.startswith("application/json") else None


# --- fuzzing ------------------------------------------------------------------------------------

@FUZZ
@given(data=st.data())
def test_fuzz_post_events(server, document, data):
    body = data.draw(body_strategy(document, "#/components/schemas/EventBatch"), label="body")
    headers = data.draw(st.sampled_from(HEADER_CHOICES["ingest"]), label="headers")
    status, ctype, raw = request(server, "POST", "/api/v1/events", body, headers)
    result = check(status, ctype, raw)
    if headers is not INGEST:
        assert status == 401
    if status == 200:
        sent = json.loads(body)["events"]
        assert result["accepted"] + result["rejected"] + result["duplicates"] == len(sent)
        assert all(e["field"] and e["reason"] and 0 <= e["index"] < len(sent) for e in result["errors"])


@FUZZ
@given(data=st.data())
def test_fuzz_post_feedback(server, document, data):
    body = data.draw(body_strategy(document, "#/components/schemas/FeedbackIn"), label="body")
    headers = data.draw(st.sampled_from(HEADER_CHOICES["apikey"]), label="headers")
    status, ctype, raw = request(server, "POST", "/api/v1/feedback", body, headers)
    result = check(status, ctype, raw)
    assert status in (201, 400, 401, 413)
    if status == 201:
        FeedbackIn.model_validate_json(body)  # only valid feedback is stored
        assert set(result) == {"id", "created_at", "urgent"}


@pytest.mark.parametrize("path", ["/api/v1/feedback", "/api/v1/feedback/insights", "/api/v1/errors"])
@FUZZ
@given(data=st.data())
def test_fuzz_list_feedback(server, document, data, path):
    op = document["paths"][path]["get"]
    defs = document["components"]["schemas"]
    params = {}
    for param in op["parameters"]:
        valid = from_schema(param["schema"], defs, fuzz=False).filter(lambda v: v is not None).map(
            lambda v: str(v).lower() if isinstance(v, bool) else str(v))
        value = data.draw(st.one_of(st.none(), st.none(), st.none(), valid, valid, valid, st.text(max_size=12)),
                          label=param["name"])
        if value is not None:
            params[param["name"]] = value
    if data.draw(st.integers(0, 9), label="unknown parameter") == 0:
        params[data.draw(st.text(min_size=1, max_size=6), label="name")] = "1"
    headers = data.draw(st.sampled_from(HEADER_CHOICES["admin"]), label="headers")
    status, ctype, raw = request(server, "GET", f"{path}?" + urlencode(params), None, headers)
    check(status, ctype, raw)
    assert status in (200, 400, 401)


# Dot segments ("." and "..") are normalised away by URL handling before routing:
# such user ids cannot be addressed in a path (documented in docs/api.md).
USER_IDS = st.text(min_size=0, max_size=300).filter(lambda s: s not in (".", ".."))


@FUZZ
@given(user=USER_IDS, op=st.sampled_from([("DELETE", ""), ("POST", "/opt-out"), ("POST", "/opt-in"),
                                          ("GET", "/export")]),
       headers=st.sampled_from(HEADER_CHOICES["admin"]))
def test_fuzz_user_operations(server, user, op, headers):
    method, suffix = op
    path = f"/api/v1/users/{quote(user, safe='', errors='surrogatepass')}{suffix}"
    status, ctype, raw = request(server, method, path, None, headers)
    if user == "":
        assert status in (404, 405)  # no user id: not this operation at all
        return
    error = check(status, ctype, raw)
    assert status in (200, 400, 401, 409)
    if status == 400:
        assert error["field"] == "user_id"


@FUZZ
@given(data=st.data(), user=st.sampled_from(["alice", "bob", "x" * 257]))
def test_fuzz_consent(server, document, data, user):
    body = data.draw(body_strategy(document, "#/components/schemas/ConsentIn"), label="body")
    headers = data.draw(st.sampled_from(HEADER_CHOICES["admin"]), label="headers")
    status, ctype, raw = request(server, "POST", f"/api/v1/users/{user}/consent", body, headers)
    result = check(status, ctype, raw)
    assert status in (200, 400, 401)
    if status == 200:
        sent = ConsentIn.model_validate_json(body)  # only a valid decision is recorded
        assert result["state"] == sent.state and result["policy_version"] == sent.policy_version
