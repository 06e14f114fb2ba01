"""Slow and idle clients are closed and counted; the connection cap holds; /metrics keeps answering.

The server runs as ``clary-exporter`` runs it (tests/server/listening.py),
with timeouts of a fraction of a second so each test waits briefly; no test
asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from exporter.config import Config, ConfigError, load
from exporter.server import connections
from tests.api_helpers import INGEST
from tests.server.listening import request, serving

SHORT = 0.3
LONG = 30.0


async def test_a_client_that_never_finishes_its_headers_is_closed(tmp_path):
    async with serving(tmp_path, header_timeout=SHORT) as served:
        silent = await served.connect()  # connects and sends nothing
        partial = await served.connect()
        await partial.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: never complete
        assert await silent.closed_by_server()
        assert await partial.closed_by_server()
        assert served.closed("header_timeout") == 2
        assert served.closed("idle") == served.closed("body_timeout") == served.closed("limit") == 0


async def test_a_complete_request_is_answered_and_the_idle_connection_closed_after_keepalive(tmp_path):
    async with serving(tmp_path, header_timeout=LONG, keepalive_timeout=SHORT) as served:
        conn = await served.connect()
        for _ in range(2):  # keep-alive: two requests on one connection
            await conn.send(request("GET", "/healthz"))
            status, headers, body = await conn.response()
            assert status == 200 and json.loads(body) == {"status": "ok"}
            assert headers.get("connection", "").lower() != "close"
        assert await conn.closed_by_server()
        assert served.closed("idle") == 1
        assert served.closed("header_timeout") == 0


async def test_a_body_that_trickles_is_cut_off_and_nothing_is_recorded(tmp_path, caplog):
    async with serving(tmp_path, header_timeout=LONG, body_timeout=SHORT) as served:
        before = served.registry.get_sample_value(
            "clary_exporter_events_total", {"type": "queue_length", "outcome": "accepted"})
        conn = await served.connect()
        body = b'{"events": [{"type": "queue_length", "queue": "ocr", "length": 3}]}'
        await conn.send(request("POST", "/api/v1/events", {**INGEST, "Content-Type": "application/json"},
                                body[:10], length=len(body)))
        assert await conn.closed_by_server()
        assert served.closed("body_timeout") == 1
        assert served.registry.get_sample_value(
            "clary_exporter_events_total", {"type": "queue_length", "outcome": "accepted"}) == before
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], caplog.text


async def test_an_unread_body_is_drained_at_most_until_the_body_timeout(tmp_path):
    """A refused request (no token) is answered at once; its trickling body then ends at the body timeout."""
    async with serving(tmp_path, header_timeout=LONG, body_timeout=SHORT) as served:
        conn = await served.connect()
        await conn.send(request("POST", "/api/v1/events", body=b"{", length=1000))
        status, _, body = await conn.response()
        assert status == 401 and json.loads(body)["field"] == "Authorization"
        assert await conn.closed_by_server()
        assert served.closed("body_timeout") == 1


async def test_an_unread_body_is_drained_for_a_bounded_time_even_under_a_long_body_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(connections, "DRAIN_SECONDS", SHORT)
    async with serving(tmp_path, header_timeout=LONG, body_timeout=LONG) as served:
        conn = await served.connect()
        await conn.send(request("POST", "/healthz", body=b"x", length=1000))
        assert (await conn.response())[0] == 405
        assert await conn.closed_by_server()
        assert served.closed("body_timeout") == 1


async def test_past_the_cap_a_new_connection_displaces_the_longest_idle_one(tmp_path):
    async with serving(tmp_path, header_timeout=LONG, max_connections=2) as served:
        oldest = await served.connect()
        await asyncio.sleep(0.05)
        newer = await served.connect()
        await asyncio.sleep(0.05)
        scraper = await served.connect()
        await scraper.send(request("GET", "/metrics"))
        status, _, body = await scraper.response()
        assert status == 200
        text = body.decode()
        assert "clary_exporter_connections_open 2.0" in text  # newer and the scraper
        assert 'clary_exporter_connections_closed_total{reason="limit"} 1.0' in text
        assert await oldest.closed_by_server()
        await newer.send(request("GET", "/healthz"))
        assert (await newer.response())[0] == 200


async def test_past_the_cap_with_every_connection_busy_a_new_one_is_closed_at_once(tmp_path):
    async with serving(tmp_path, header_timeout=LONG, body_timeout=LONG, max_connections=2) as served:
        busy = []
        for _ in range(2):  # handlers waiting for the rest of their bodies: inside a request
            conn = await served.connect()
            await conn.send(request("POST", "/api/v1/events", INGEST, b'{"events": [', length=100))
            busy.append(conn)
        for _ in range(100):
            if served.guard.phases()["request"] == 2:
                break
            await asyncio.sleep(0.02)
        refused = await served.connect()
        assert await refused.closed_by_server()
        assert served.closed("limit") == 1
        assert served.guard.open_connections == 2
        for conn in busy:
            conn.close()


def test_limits_come_from_flags_environment_and_file_with_defaults(tmp_path):
    assert Config().model_dump(include={"header_timeout", "body_timeout", "keepalive_timeout", "max_connections",
                                        "max_compression_ratio"}) == {
        "header_timeout": 10.0, "body_timeout": 60.0, "keepalive_timeout": 75.0, "max_connections": 1024,
        "max_compression_ratio": 100}
    config_file = tmp_path / "clary.yml"
    config_file.write_text("header_timeout: 5\nmax_connections: 64\n")
    environ = {"CLARY_BODY_TIMEOUT": "30", "CLARY_MAX_CONNECTIONS": "128", "CLARY_MAX_COMPRESSION_RATIO": "50"}
    config = load({"config": str(config_file), "keepalive_timeout": 20.0}, environ)
    assert (config.header_timeout, config.body_timeout, config.keepalive_timeout) == (5.0, 30.0, 20.0)
    assert (config.max_connections, config.max_compression_ratio) == (128, 50)
    with pytest.raises(ConfigError, match="header_timeout"):
        load({}, {"CLARY_HEADER_TIMEOUT": "0"})
    with pytest.raises(ConfigError, match="max_connections"):
        load({}, {"CLARY_MAX_CONNECTIONS": "lots"})


def test_the_flags_reach_the_config():
    from exporter.cli import _flags, build_parser

    args = build_parser().parse_args(["--header-timeout", "2.5", "--body-timeout", "9", "--keepalive-timeout", "4",
                                      "--max-connections", "7"])
    flags = _flags(args)
    assert {k: flags[k] for k in ("header_timeout", "body_timeout", "keepalive_timeout", "max_connections")} == {
        "header_timeout": 2.5, "body_timeout": 9.0, "keepalive_timeout": 4.0, "max_connections": 7}
