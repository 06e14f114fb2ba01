"""Demo mode keeps the operator's admin token and fails quietly on purpose (issue 19, item 11).

- Admin endpoints need the admin token in demo mode too: the configured one
  where one is configured (the public demo token is then refused), else the
  public demo token. Before, demo mode listed stored feedback to anyone.
- The demo's deliberate ``/boom`` errors log one INFO line each from
  ``exporter.demo``, no traceback; real unexpected errors keep theirs
  (tests/instrument/test_expected_errors.py).
"""

from __future__ import annotations

import json
import logging
import os

import pytest
from prometheus_client import CollectorRegistry

from exporter import demo
from exporter.config import Config
from exporter.logs import JsonFormatter, TextFormatter
from tests import support

FEEDBACK = "/api/v1/feedback"
OPERATOR_TOKEN = "operator-admin-token-0123456789"
DEMO_BEARER = {"Authorization": f"Bearer {demo.DEMO_ADMIN_TOKEN}"}
OPERATOR_BEARER = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
ADMIN_CALLS = (("GET", FEEDBACK), ("GET", FEEDBACK + "?format=csv"), ("DELETE", "/api/v1/users/demo-lite-user"),
               ("POST", "/api/v1/users/demo-lite-user/opt-out"), ("POST", "/api/v1/users/demo-lite-user/opt-in"))


async def _demo_client(aiohttp_client, tmp_path, **settings):
    config = Config(demo=True, collectors={"system": False, "gpu": False}, data_dir=tmp_path, **settings)
    return await aiohttp_client(demo.create_app(config, CollectorRegistry()))


async def _statuses(client, headers: dict) -> list[int]:
    return [(await client.request(method, path, headers=headers)).status for method, path in ADMIN_CALLS]


async def test_a_configured_admin_token_is_required_in_demo_mode(aiohttp_client, tmp_path):
    client = await _demo_client(aiohttp_client, tmp_path, admin_token=OPERATOR_TOKEN)
    resp = await client.get(FEEDBACK)
    assert resp.status == 401
    assert await resp.json() == {"error": "unauthorized", "field": "Authorization",
                                 "message": "missing bearer token (admin)"}
    assert await _statuses(client, {}) == [401] * len(ADMIN_CALLS)
    assert await _statuses(client, DEMO_BEARER) == [401] * len(ADMIN_CALLS)  # the public token is not added
    assert await _statuses(client, OPERATOR_BEARER) == [200] * len(ADMIN_CALLS)
    document = await (await client.get("/api/v1/openapi.json")).json()
    assert document["paths"][FEEDBACK]["get"]["security"] == [{"adminToken": []}]


async def test_without_a_configured_admin_token_the_demo_token_is_the_admin_token(aiohttp_client, tmp_path):
    client = await _demo_client(aiohttp_client, tmp_path)
    assert await _statuses(client, {}) == [401] * len(ADMIN_CALLS)
    assert await _statuses(client, OPERATOR_BEARER) == [401] * len(ADMIN_CALLS)
    assert await _statuses(client, DEMO_BEARER) == [200] * len(ADMIN_CALLS)


async def test_each_deliberate_error_is_one_info_line(aiohttp_client, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    client = await _demo_client(aiohttp_client, tmp_path)
    caplog.clear()
    ids = []
    for _ in range(5):
        resp = await client.get("/demo/api/v1/boom", headers={"X-API-Key": "demo-standard-key"})
        assert resp.status == 500
        ids.append((await resp.json())["error_id"])
    deliberate = [r for r in caplog.records if r.getMessage() == "deliberate error (expected)"]
    assert [r.fields["error_id"] for r in deliberate] == ids
    assert {(r.name, r.levelno, r.exc_info) for r in deliberate} == {("exporter.demo", logging.INFO, None)}
    assert {(r.fields["error_type"], r.fields["route"], r.fields["tier"]) for r in deliberate} == \
        {("RuntimeError", "/demo/api/v1/boom", "standard")}
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    for formatter in (TextFormatter(), JsonFormatter()):
        rendered = [formatter.format(r) for r in deliberate]
        assert all("\n" not in line and "Traceback" not in line for line in rendered)


# --- the real process -------------------------------------------------------------------------------


def _get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    return support.http_get(url, headers=headers)


@pytest.mark.parametrize("configured", [True, False], ids=["admin-token-configured", "no-admin-token"])
def test_demo_process_admin_token_and_quiet_deliberate_errors(tmp_path, configured):
    port = support.free_port()
    base = f"http://{support.LOOPBACK}:{port}"
    log_path = tmp_path / "log"
    assert "CLARY_ADMIN_TOKEN" not in os.environ
    env = {"CLARY_ADMIN_TOKEN": OPERATOR_TOKEN} if configured else {}
    ids = []
    with support.exporter(port, "--demo", "--log-format", "json", "--data-dir", str(tmp_path / "data"),
                          "--no-collector.gpu", log_path=log_path, env=env):
        good, bad = (OPERATOR_BEARER, DEMO_BEARER) if configured else (DEMO_BEARER, OPERATOR_BEARER)
        assert _get(base + FEEDBACK)[0] == 401
        assert _get(base + FEEDBACK, bad)[0] == 401
        status, body = _get(base + FEEDBACK, good)
        assert status == 200 and "items" in json.loads(body)
        for _ in range(4):
            status, body = _get(base + "/demo/api/v1/boom", {"X-API-Key": "demo-lite-key"})
            assert status == 500
            ids.append(json.loads(body)["error_id"])
    text = log_path.read_text()
    records = [json.loads(line) for line in text.splitlines()]  # every line is one JSON record
    assert "Traceback" not in text
    assert [r for r in records if r["level"] == "error"] == []
    for error_id in ids:
        [record] = [r for r in records if r.get("error_id") == error_id]
        assert (record["logger"], record["level"], record["msg"]) == ("exporter.demo", "info",
                                                                      "deliberate error (expected)")
        assert "stack" not in record
    [banner] = [r for r in records if r["msg"].startswith("demo mode: open")]
    assert "Its errors are deliberate and expected" in banner["msg"]
    assert banner["admin_auth"] == ("configured admin token" if configured else "public demo admin token")
    assert OPERATOR_TOKEN not in text and demo.DEMO_ADMIN_TOKEN not in text
