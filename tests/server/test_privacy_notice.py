"""The privacy notice: complete against the real schema and catalog, served as HTML and JSON with the config's values."""

from __future__ import annotations

import base64

import bcrypt
import yaml

from exporter import catalog
from exporter.config import Config
from exporter.server import webconfig
from exporter.server.app import create_app
from exporter.server.privacy_fields import (
    LABELS,
    STORE_FIELDS,
    catalog_labels,
    store_columns,
    uncovered,
)
from exporter.store.schema import connect


def sqlite_store_columns(tmp_path) -> set[str]:
    """``table.column`` of every column a new SQLite store has (also read by test_privacy_schema_engines)."""
    conn, _ = connect(tmp_path / "store.db", busy_timeout=1.0)
    try:
        return store_columns(conn)
    finally:
        conn.close()


def test_every_store_column_and_catalog_label_has_an_entry(tmp_path):
    columns = sqlite_store_columns(tmp_path)
    assert "feedback.user_hash" in columns and "error_records.trace" in columns  # the real schema was read
    assert uncovered(columns, catalog_labels(catalog.CATALOG)) == {
        "missing_columns": [], "stale_columns": [], "missing_labels": [], "stale_labels": []}


def test_the_check_fails_on_a_column_or_label_without_an_entry(tmp_path):
    """Not vacuous: a temporary schema with one more column, a catalog with one more label, are both caught."""
    conn, _ = connect(tmp_path / "fake.db", busy_timeout=1.0)  # the real schema, then a temporary change
    conn.executescript("ALTER TABLE feedback ADD COLUMN email TEXT; CREATE TABLE sessions (session_id TEXT);")
    columns = store_columns(conn)
    conn.close()
    extra = catalog.MetricSpec("clary_fake_total", catalog.Kind.COUNTER, "fake",
                               (catalog.LabelSpec("user_email"),))
    found = uncovered(columns - {"meta.value"}, catalog_labels((*catalog.CATALOG, extra)) - {"gpu"})
    assert found == {"missing_columns": ["feedback.email", "sessions.session_id"], "stale_columns": ["meta.value"],
                     "missing_labels": ["user_email"], "stale_labels": ["gpu"]}


def _config(tmp_path, **kw) -> Config:
    return Config(hmac_secret="s" * 32, collectors={"system": False, "gpu": False}, data_dir=tmp_path, **kw)


async def test_json_notice_has_the_configured_durations_and_every_entry(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(_config(tmp_path, retention_days=30, workflow_session_timeout=900,
                                                     license_stale_after=7200)))
    for path, headers in (("/privacy.json", {}), ("/privacy", {"Accept": "application/json"})):
        resp = await client.get(path, headers=headers)
        assert resp.status == 200 and resp.content_type == "application/json", path
        data = await resp.json()
        assert data["settings"]["retention_days"] == 30
        stored = {entry["field"]: entry for entry in data["stored"]}
        assert set(stored) == set(STORE_FIELDS)
        assert stored["feedback.user_hash"]["personal"] is True
        assert stored["feedback.user_hash"]["retention"].startswith("30 days")
        assert "HMAC" in stored["activity.user_hash"]["protection"]
        assert stored["error_records.message"]["protection"].startswith("redacted")
        assert "deleted" in stored["consents.user_hash"]["retention"]
        assert {entry["label"] for entry in data["labels"]} == set(LABELS)
        memory = " ".join(entry["retention"] for entry in data["in_memory"])
        assert "900 seconds" in memory and "7200 seconds" in memory
        assert data["consent"] == "opt_out"


async def test_rights_are_the_registered_user_endpoints(aiohttp_client, tmp_path):
    app = create_app(_config(tmp_path))
    client = await aiohttp_client(app)
    data = await (await client.get("/privacy.json")).json()
    rights = {(r["method"], r["path"]) for r in data["rights"]}
    assert {("DELETE", "/api/v1/users/{id}"), ("POST", "/api/v1/users/{id}/opt-out")} <= rights
    served = {(route.method, route.resource.canonical.replace("{user_id}", "{id}")) for route in app.router.routes()}
    assert rights <= served  # nothing promised that the router does not serve
    assert {("GET", "/api/v1/users/{id}/export"), ("POST", "/api/v1/users/{id}/consent")} <= rights


async def test_the_notice_states_the_consent_mode(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(_config(tmp_path, privacy={"consent": "opt_in"})))
    assert (await (await client.get("/privacy.json")).json())["consent"] == "opt_in"
    assert "Nothing per user is kept until the user&#x27;s consent is recorded" in await (
        await client.get("/privacy")).text()


async def test_html_notice_names_every_personal_field_escaped_and_is_linked(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(_config(tmp_path, retention_days=30)))
    resp = await client.get("/privacy")
    assert resp.status == 200 and resp.content_type == "text/html"
    body = await resp.text()
    assert "30 days" in body and "365 days" not in body
    for name, field in STORE_FIELDS.items():
        if field.personal:
            assert f"<td>{name}</td>" in body, name
    assert "<code>DELETE /api/v1/users/{id}</code>" in body
    assert "(/users/{id})" in body and "<script" not in body
    assert "HMAC-SHA256(secret, license key)" in body
    landing = await (await client.get("/")).text()
    assert 'href="privacy"' in landing


async def test_the_notice_is_behind_web_config_basic_auth(aiohttp_client, tmp_path):
    path = tmp_path / "web.yml"
    password_hash = bcrypt.hashpw(b"pw", bcrypt.gensalt(10)).decode()
    path.write_text(yaml.safe_dump({"basic_auth_users": {"ops": password_hash}}))
    client = await aiohttp_client(create_app(_config(tmp_path / "data"), web_config=webconfig.load(path)))
    assert (await client.get("/privacy")).status == 401
    auth = {"Authorization": "Basic " + base64.b64encode(b"ops:pw").decode()}
    resp = await client.get("/privacy.json", headers=auth)
    assert resp.status == 200 and (await resp.json())["settings"]["retention_days"] == 365
