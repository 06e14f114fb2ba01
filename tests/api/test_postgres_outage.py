"""A PostgreSQL outage, for real: the exporter's database refuses connections and its sessions are killed.

The server is shared by other tests, so the outage is of one database only:
``ALLOW_CONNECTIONS false`` plus ``pg_terminate_backend`` of its sessions is
what a restarting or unreachable server looks like to the exporter (every
connection fails). The exporter must answer JSON 503 without the password,
keep ``/metrics`` fast, report not ready, and recover by itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tests import support

pytestmark = pytest.mark.e2e

SECRET_ENV = {"CLARY_HMAC_SECRET": "outage-secret-0123456789abcdef", "CLARY_ADMIN_TOKEN": "admin-token-0123456789abcdef"}
FEEDBACK = {"method": "POST", "body": {"type": "bug", "rating": 1}, "headers": {"X-API-Key": "key-lite-alice"}}


def _allow_connections(server, url: str, allowed: bool) -> None:
    """Open or close the database to new sessions; closing also ends the ones it has (as a server restart does)."""
    name = conninfo_to_dict(url)["dbname"]
    with server.admin() as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(name), sql.SQL("true" if allowed else "false")))
        if not allowed:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE datname = %s AND pid <> pg_backend_pid()", (name,))


def test_an_outage_is_json_503_metrics_stay_fast_and_the_exporter_recovers_by_itself(tmp_path, postgres_server,
                                                                                       database_url):
    password = conninfo_to_dict(database_url)["password"]
    config = tmp_path / "clary.yml"
    config.write_text('api_keys: {"key-lite-alice": {tier: lite, user: alice}}\n')
    port = support.free_port()
    base = f"http://{support.LOOPBACK}:{port}"
    log_path = tmp_path / "log"
    with support.exporter(port, "--config", str(config), "--database-url", database_url, "--no-collector.gpu",
                          "--log-format", "json", env=SECRET_ENV, log_path=log_path):
        assert support.http_request(f"{base}/api/v1/feedback", **FEEDBACK)[0] == 201
        _allow_connections(postgres_server, database_url, False)
        try:
            status, content_type, body = support.http_request(f"{base}/api/v1/feedback", **FEEDBACK)
            assert (status, content_type, json.loads(body)["error"]) == (503, "application/json",
                                                                         "storage_unavailable")
            assert password not in body.decode()
            status, _, body = support.http_request(f"{base}/readyz")
            assert status == 503 and json.loads(body)["reason"].startswith("storage unavailable"), body
            assert password not in body.decode()
            for _ in range(3):
                started = time.monotonic()
                status, _, body = support.http_request(f"{base}/metrics", timeout=5)
                elapsed = time.monotonic() - started
                assert status == 200 and elapsed < 1.0, elapsed
            assert b"\nclary_exporter_storage_up 0.0\n" in body
        finally:
            _allow_connections(postgres_server, database_url, True)
        support.wait_until(lambda: support.http_request(f"{base}/readyz")[0] == 200, timeout=30,
                           what="readyz 200 once the database is back")
        assert support.http_request(f"{base}/api/v1/feedback", **FEEDBACK)[0] == 201
    text = log_path.read_text()
    assert password not in text and "Traceback" not in text
    assert "storage available again" in [json.loads(line)["msg"] for line in text.splitlines()]


def test_an_unreachable_database_at_start_is_exit_2_one_line_without_the_password():
    port = support.free_port()  # nothing listens there
    password = "never-shown-3e7f1c2a9b"
    url = f"postgresql://clary:{password}@{support.LOOPBACK}:{port}/clary"
    result = subprocess.run(
        support.exporter_cmd("--listen-address", f"{support.LOOPBACK}:{support.free_port()}", "--no-collector.gpu",
                             "--no-collector.system", "--database-url", url),
        capture_output=True, text=True, timeout=60, env={**os.environ, **SECRET_ENV},
        stdin=subprocess.DEVNULL, cwd=support.ROOT, check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clary-exporter: error: "), result.stderr
    assert f"127.0.0.1:{port}" in lines[0] and password not in result.stderr + result.stdout
