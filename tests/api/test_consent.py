"""Consent management (privacy.consent opt_in), POST /users/{id}/consent and GET /users/{id}/export."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from exporter.api.app import INGEST as INGEST_KEY
from exporter.config import ConfigError, load
from exporter.store.consent import granted
from tests.api_helpers import ADMIN, HASH, INGEST, app_client, database, value

ALICE = {"X-API-Key": "key-lite-alice"}
BOB = {"X-API-Key": "key-pro-bob"}
ACTION = {"type": "user_action", "tier": "lite", "action": "upload", "user_id": "alice"}
ERROR = {"type": "error", "tier": "lite", "error_type": "KeyError", "route": "/x", "user_id": "alice"}
GRANT = {"state": "granted", "policy_version": "2026-01"}
WITHDRAW = {"state": "withdrawn", "policy_version": "2026-01"}


@pytest.fixture
def registry():
    return CollectorRegistry()


async def _traffic(app, client, n: int) -> None:
    """One action, one feedback and one error of alice's (error id ``e<n>``), then everything flushed."""
    await client.post("/api/v1/events", json={"events": [ACTION, {**ERROR, "error_id": f"e{n}"}]}, headers=INGEST)
    assert (await client.post("/api/v1/feedback", json={"type": "general", "rating": 4, "text": f"t{n}"},
                              headers=ALICE)).status == 201
    api = app[INGEST_KEY]
    api.backlog.fold()
    await api.flush_activity()
    await api.errors.write()


async def test_opt_in_keeps_nothing_per_user_until_consent_and_again_after_withdrawal(aiohttp_client, tmp_path,
                                                                                        registry):
    app, client = await app_client(aiohttp_client, tmp_path, registry, privacy={"consent": "opt_in"})
    db = database(tmp_path)

    def actions() -> float:
        return value(registry, "clary_user_actions_total", tier="lite", action="upload")

    def active() -> float:
        return value(registry, "clary_active_users", tier="lite", window="5m")

    await _traffic(app, client, 0)  # no consent yet: counted, not kept per user
    assert actions() == 1 and active() == 0
    assert db.activity() == [] and db.list_feedback()[0][0]["user_hash"] is None
    assert [r["user_hash"] for r in db.export_user(HASH("alice"))["error_records"]] == []

    resp = await client.post("/api/v1/users/alice/consent", json=GRANT, headers=ADMIN)
    assert await resp.json() == {"state": "granted", "policy_version": "2026-01", "tracked": True}
    await _traffic(app, client, 1)
    assert actions() == 2 and active() == 1
    assert {(r[0], r[3]) for r in db.activity()} == {(HASH("alice"), "upload"), (HASH("alice"), "feedback")}
    assert db.list_feedback()[0][0]["user_hash"] == HASH("alice")
    assert len(db.export_user(HASH("alice"))["error_records"]) == 1

    resp = await client.post("/api/v1/users/alice/consent", json=WITHDRAW, headers=ADMIN)
    assert (await resp.json())["tracked"] is False
    before = db.activity()
    await _traffic(app, client, 2)
    assert actions() == 3 and db.activity() == before and db.list_feedback()[0][0]["user_hash"] is None
    assert len(db.export_user(HASH("alice"))["error_records"]) == 1
    assert db.opted_out() == {HASH("alice")}  # withdrawal is an opt-out
    db.close()


async def test_consent_survives_a_restart_and_opt_out_mode_tracks_without_it(aiohttp_client, tmp_path, registry):
    app, client = await app_client(aiohttp_client, tmp_path, registry, privacy={"consent": "opt_in"})
    await client.post("/api/v1/users/alice/consent", json=GRANT, headers=ADMIN)
    await client.close()
    app, client = await app_client(aiohttp_client, tmp_path, CollectorRegistry(), privacy={"consent": "opt_in"})
    activity = app[INGEST_KEY].activity
    assert not activity.is_opted_out(HASH("alice")) and activity.is_opted_out(HASH("bob"))
    await client.close()
    app, client = await app_client(aiohttp_client, tmp_path, CollectorRegistry())  # opt_out mode: the default
    assert not app[INGEST_KEY].activity.is_opted_out(HASH("bob"))


@pytest.mark.parametrize("body, field", [
    ({"policy_version": "1"}, "state"), ({"state": "maybe", "policy_version": "1"}, "state"),
    ({"state": "granted"}, "policy_version"), ({"state": "granted", "policy_version": ""}, "policy_version"),
    ({"state": "granted", "policy_version": "x" * 65}, "policy_version"),
    ({**GRANT, "extra": 1}, "extra"), ([], "body"),
])
async def test_invalid_consent_is_400_naming_the_field(aiohttp_client, tmp_path, registry, body, field):
    _, client = await app_client(aiohttp_client, tmp_path, registry, privacy={"consent": "opt_in"})
    resp = await client.post("/api/v1/users/alice/consent", json=body, headers=ADMIN)
    assert resp.status == 400 and (await resp.json())["field"] == field
    assert database(tmp_path).export_user(HASH("alice"))["consents"] == []


async def test_consent_and_export_need_the_admin_token(aiohttp_client, tmp_path, registry):
    _, client = await app_client(aiohttp_client, tmp_path, registry)
    for method, path in (("POST", "/api/v1/users/alice/consent"), ("GET", "/api/v1/users/alice/export")):
        resp = await client.request(method, path, json=GRANT, headers=INGEST)
        assert resp.status == 401 and (await resp.json())["field"] == "Authorization"


async def test_granting_consent_to_a_user_opted_out_in_config_is_409(aiohttp_client, tmp_path, registry):
    _, client = await app_client(aiohttp_client, tmp_path, registry, opted_out_users=["alice"],
                                   privacy={"consent": "opt_in"})
    resp = await client.post("/api/v1/users/alice/consent", json=GRANT, headers=ADMIN)
    assert resp.status == 409 and database(tmp_path).export_user(HASH("alice"))["consents"] == []


async def test_export_returns_exactly_the_users_data_with_consent_state(aiohttp_client, tmp_path, registry):
    app, client = await app_client(aiohttp_client, tmp_path, registry)
    await client.post("/api/v1/users/alice/consent", json=GRANT, headers=ADMIN)
    await _traffic(app, client, 0)
    await client.post("/api/v1/feedback", json={"type": "bug", "rating": 3, "text": "bob's"}, headers=BOB)
    await client.post("/api/v1/events", json={"events": [{**ACTION, "user_id": "bob"}]}, headers=INGEST)
    await client.post("/api/v1/users/bob/opt-out", headers=ADMIN)

    data = await (await client.get("/api/v1/users/alice/export", headers=ADMIN)).json()

    assert data["consent_mode"] == "opt_out" and data["consent"] == "granted"
    assert data["tracked"] is True and data["opted_out"] is False and data["opt_outs"] == []
    assert [r["text"] for r in data["feedback"]] == ["t0"]
    assert {r["kind"] for r in data["activity"]} == {"upload", "feedback"}
    assert [r["error_id"] for r in data["error_records"]] == ["e0"]
    assert [(c["state"], c["policy_version"]) for c in data["consents"]] == [("granted", "2026-01")]
    rows = [r for table in ("feedback", "activity", "error_records", "consents") for r in data[table]]
    assert {r["user_hash"] for r in rows} == {HASH("alice")}

    await client.post("/api/v1/users/alice/consent", json=WITHDRAW, headers=ADMIN)
    data = await (await client.get("/api/v1/users/alice/export", headers=ADMIN)).json()
    assert data["consent"] == "withdrawn" and data["opted_out"] is True and data["tracked"] is False
    assert [c["state"] for c in data["consents"]] == ["granted", "withdrawn"]
    bob = await (await client.get("/api/v1/users/bob/export", headers=ADMIN)).json()
    assert bob["consent"] is None and bob["opted_out"] is True and [r["text"] for r in bob["feedback"]] == ["bob's"]


async def test_deletion_removes_consent_history_but_keeps_the_opt_out(aiohttp_client, tmp_path, registry):
    _, client = await app_client(aiohttp_client, tmp_path, registry, privacy={"consent": "opt_in"})
    await client.post("/api/v1/users/alice/consent", json=GRANT, headers=ADMIN)
    await client.post("/api/v1/users/alice/consent", json=WITHDRAW, headers=ADMIN)
    await client.post("/api/v1/users/bob/consent", json=GRANT, headers=ADMIN)

    removed = (await (await client.delete("/api/v1/users/alice", headers=ADMIN)).json())["removed"]

    assert removed["consents"] == 2
    db = database(tmp_path)
    assert db.export_user(HASH("alice"))["consents"] == [] and db.opted_out() == {HASH("alice")}
    assert [c["state"] for c in db.export_user(HASH("bob"))["consents"]] == ["granted"]
    # Retention never purges consent records: they outlive the data they govern.
    assert "consents" not in db.purge(1, now=1e12) and db.count("consents") == 1
    assert granted(db.connection()) == {HASH("bob")}
    db.close()


def test_consent_mode_from_file_env_and_flag(tmp_path):
    assert load({}, {}).privacy.consent == "opt_out"
    assert load({}, {"CLARY_PRIVACY_CONSENT": "opt_in"}).privacy.consent == "opt_in"
    config = tmp_path / "c.yml"
    config.write_text("privacy:\n  consent: opt_in\n")
    assert load({"config": str(config)}, {}).privacy.consent == "opt_in"
    assert load({"config": str(config), "privacy_consent": "opt_out"}, {}).privacy.consent == "opt_out"
    with pytest.raises(ConfigError, match="privacy.consent"):
        load({}, {"CLARY_PRIVACY_CONSENT": "maybe"})
