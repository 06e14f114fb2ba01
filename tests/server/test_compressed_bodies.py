"""Compressed request bodies: inflated only by the endpoints that take them, after auth, under both limits.

Everything else carrying a ``Content-Encoding`` is refused with 415 and its
connection closed without reading the body. The CPU a gzip bomb costs is
measured by benchmarks/security/gzip_bomb.py, not here.
"""

from __future__ import annotations

import gzip
import json
import zlib

import aiohttp
import pytest

from tests.api_helpers import API_KEYS, INGEST
from tests.server.listening import request, serving

EVENTS = "/api/v1/events"
BATCH = {"events": [{"type": "queue_length", "queue": "ocr", "length": 4}]}
JSON = {"Content-Type": "application/json"}
API_KEY = next(iter(API_KEYS))
# 64 MiB of zeros, gzipped: about 64 KB on the wire.
BOMB = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)


def accepted(served) -> float:
    return served.registry.get_sample_value(
        "clary_exporter_events_total", {"type": "queue_length", "outcome": "accepted"})


@pytest.mark.parametrize("encoding, encode", [
    ("gzip", gzip.compress),
    ("x-gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some clients send it
    ("gzip", lambda data: gzip.compress(data[:20]) + gzip.compress(data[20:])),  # two gzip members
    ("identity", lambda data: data),
])
async def test_the_event_and_feedback_endpoints_take_compressed_bodies(tmp_path, encoding, encode):
    async with serving(tmp_path) as served:
        conn = await served.connect()
        await conn.send(request("POST", EVENTS, {**INGEST, **JSON, "Content-Encoding": encoding},
                                encode(json.dumps(BATCH).encode())))
        status, _, body = await conn.response()
        assert status == 200, body
        assert json.loads(body)["accepted"] == 1 and accepted(served) == 1
        feedback = {"type": "general", "rating": 4, "text": "compressed"}
        await conn.send(request("POST", "/api/v1/feedback", {"X-API-Key": API_KEY, **JSON,
                                                             "Content-Encoding": encoding},
                                encode(json.dumps(feedback).encode())))
        status, _, body = await conn.response()
        assert status == 201, body


async def test_an_aiohttp_client_sending_deflate_keeps_working(tmp_path):
    """What an instrumented service's aiohttp session sends with ``compress=True`` (chunked deflate)."""
    async with serving(tmp_path) as served, aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{served.port}{EVENTS}", data=json.dumps(BATCH).encode(), headers={**INGEST, **JSON},
            compress=True) as resp:
        assert resp.status == 200 and (await resp.json())["accepted"] == 1


@pytest.mark.parametrize("method, path", [("GET", "/healthz"), ("POST", "/healthz"), ("GET", "/metrics"),
                                          ("POST", "/no/such/path"), ("POST", "/api/v1/users/dave/opt-out")])
async def test_content_encoding_anywhere_else_is_415_and_the_connection_closed_undrained(tmp_path, method, path):
    async with serving(tmp_path) as served:
        conn = await served.connect()
        # The headers announce the whole bomb; only 16 KB follow. An answer, then EOF: nothing waited for the rest.
        await conn.send(request(method, path, {"Content-Encoding": "gzip"}, BOMB[:16384], length=len(BOMB)))
        status, headers, body = await conn.response()
        assert status == 415
        error = json.loads(body)
        assert error["error"] == "unsupported_content_encoding" and error["field"] == "Content-Encoding"
        assert headers["connection"].lower() == "close"
        assert headers["accept-encoding"] == "gzip, deflate"
        assert await conn.closed_by_server()


@pytest.mark.parametrize("headers, field", [({}, "Authorization"),
                                            ({"Authorization": "Bearer wrong-token-0123456789"}, "Authorization")])
async def test_without_valid_credentials_nothing_is_inflated_and_the_connection_is_closed(tmp_path, headers, field):
    async with serving(tmp_path) as served:
        conn = await served.connect()
        await conn.send(request("POST", EVENTS, {**headers, "Content-Encoding": "gzip"}, BOMB[:16384],
                                length=len(BOMB)))
        status, response_headers, body = await conn.response()
        assert status == 401 and json.loads(body)["field"] == field
        assert response_headers["connection"].lower() == "close"
        assert await conn.closed_by_server()


async def test_a_bomb_with_a_valid_token_stops_at_the_body_limit(tmp_path):
    async with serving(tmp_path) as served:
        conn = await served.connect()
        await conn.send(request("POST", EVENTS, {**INGEST, "Content-Encoding": "gzip"}, BOMB))
        status, _, body = await conn.response()
        assert status == 413
        assert json.loads(body)["error"] in ("body_too_large", "compression_ratio_too_high")
        assert accepted(served) == 0


async def test_a_body_that_inflates_past_the_ratio_is_413(tmp_path):
    padded = json.dumps({**BATCH, "pad": " " * 200_000}).encode()  # ~200 KB from well under 1 KB
    async with serving(tmp_path) as served:
        conn = await served.connect()
        await conn.send(request("POST", EVENTS, {**INGEST, "Content-Encoding": "gzip"}, gzip.compress(padded)))
        status, _, body = await conn.response()
        assert status == 413
        error = json.loads(body)
        assert error["error"] == "compression_ratio_too_high" and error["field"] == "body"
        assert "100:1" in error["message"]


async def test_the_body_limit_applies_to_the_decompressed_size(tmp_path):
    batch = json.dumps({"events": [BATCH["events"][0]] * 200}).encode()
    async with serving(tmp_path, max_body_bytes=4096, max_compression_ratio=1000) as served:
        conn = await served.connect()
        compressed = gzip.compress(batch)
        assert len(compressed) < 4096 < len(batch)
        await conn.send(request("POST", EVENTS, {**INGEST, "Content-Encoding": "gzip"}, compressed))
        status, _, body = await conn.response()
        assert status == 413 and json.loads(body)["error"] == "body_too_large"
        assert accepted(served) == 0


@pytest.mark.parametrize("encoding, payload, status, error", [
    ("gzip", b"not gzip at all", 400, "malformed_body"),
    ("gzip", gzip.compress(json.dumps(BATCH).encode())[:-12], 400, "malformed_body"),  # truncated
    ("deflate", zlib.compress(json.dumps(BATCH).encode()) + b"trailing", 400, "malformed_body"),
    ("br", b"\x0b\x02\x80{}\x03", 415, "unsupported_content_encoding"),
    ("gzip, gzip", gzip.compress(gzip.compress(json.dumps(BATCH).encode())), 415, "unsupported_content_encoding"),
], ids=["not-gzip", "truncated-gzip", "deflate-trailing-bytes", "br", "gzip-twice"])  # ids, not the bytes: gzip
# headers carry the time, and pytest-xdist workers must collect the same test names
async def test_bad_or_unknown_encodings_are_4xx_naming_the_problem(tmp_path, encoding, payload, status, error):
    async with serving(tmp_path) as served:
        conn = await served.connect()
        await conn.send(request("POST", EVENTS, {**INGEST, "Content-Encoding": encoding}, payload))
        got, _, body = await conn.response()
        assert (got, json.loads(body)["error"]) == (status, error)
        assert accepted(served) == 0
