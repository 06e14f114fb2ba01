"""The HMAC secret and the stored hashes: another secret is refused, previous secrets rotate it (exporter.store.secrets).

Before: restarted with a new secret on the same data, ``DELETE
/api/v1/users/alice`` removed nothing and an opted-out user was tracked
again, silently.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from prometheus_client import CollectorRegistry

from exporter.api.app import INGEST as INGEST_KEY
from exporter.config import ConfigError, load
from exporter.instrument.hashing import Hasher
from exporter.store.health import StorageError
from exporter.store.secrets import fingerprint
from tests import store_backend, support
from tests.api_helpers import ADMIN, INGEST, SECRET, app_client, database, value

NEW_SECRET = "rotated-hmac-secret-abcdef0123456789"
OLD, NEW = Hasher(SECRET).digest, Hasher(NEW_SECRET).digest
ALICE = {"X-API-Key": "key-lite-alice"}
BOB = {"X-API-Key": "key-pro-bob"}


def _meta(data_dir) -> dict[str, str]:
    return dict(database(data_dir).connection().execute("SELECT key, value FROM meta").fetchall())


async def _with_old_secret(aiohttp_client, data_dir) -> None:
    """A run with the old secret: alice's feedback, dave's activity, bob opted out; then stopped."""
    _, client = await app_client(aiohttp_client, data_dir, CollectorRegistry())
    assert (await client.post("/api/v1/feedback", headers=ALICE, json={"type": "general", "rating": 4})).status == 201
    resp = await client.post("/api/v1/events", headers=INGEST, json={"events": [
        {"type": "user_action", "tier": "lite", "action": "upload", "user_id": "dave"}]})
    assert (await resp.json())["accepted"] == 1
    assert (await client.post("/api/v1/users/bob/opt-out", headers=ADMIN)).status == 200
    await client.close()  # the app's shutdown flushes the activity
    db = database(data_dir)
    assert db.opted_out() == {OLD("bob")} and {r[0] for r in db.activity()} == {OLD("alice"), OLD("dave")}
    assert _meta(data_dir)["hmac_fingerprint"] == fingerprint(SECRET)


async def test_another_secret_on_existing_data_is_refused_naming_the_fix(aiohttp_client, tmp_path):
    await _with_old_secret(aiohttp_client, tmp_path)
    with pytest.raises(StorageError) as caught:
        await app_client(aiohttp_client, tmp_path, CollectorRegistry(), hmac_secret=NEW_SECRET)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{database(tmp_path).location} was written with another HMAC secret")
    for fragment in (fingerprint(SECRET), fingerprint(NEW_SECRET), "hmac_previous_secrets",
                     "CLARY_HMAC_PREVIOUS_SECRETS", "docs/configuration.md#rotating-the-hmac-secret"):
        assert fragment in message
    assert SECRET not in message and NEW_SECRET not in message
    assert _meta(tmp_path)["hmac_fingerprint"] == fingerprint(SECRET)  # nothing changed


async def test_with_the_previous_secret_deletion_opt_out_and_opt_in_reach_the_old_rows(aiohttp_client, tmp_path):
    await _with_old_secret(aiohttp_client, tmp_path)
    registry = CollectorRegistry()
    app, client = await app_client(aiohttp_client, tmp_path, registry, hmac_secret=NEW_SECRET,
                                   hmac_previous_secrets=[SECRET])
    assert _meta(tmp_path)["hmac_fingerprint"] == fingerprint(NEW_SECRET)
    db = database(tmp_path)

    # bob opted out under the old secret: still opted out, for feedback, activity and active users.
    assert (await client.post("/api/v1/feedback", headers=BOB, json={"type": "general", "rating": 5})).status == 201
    resp = await client.post("/api/v1/events", headers=INGEST, json={"events": [
        {"type": "user_action", "tier": "lite", "action": "upload", "user_id": user} for user in ("bob", "erin")]})
    assert (await resp.json())["accepted"] == 2
    await app[INGEST_KEY].flush_activity()
    assert [r["user_hash"] for r in db.list_feedback()[0] if r["tier"] == "professional"] == [None]
    assert {r[0] for r in db.activity()} == {OLD("alice"), OLD("dave"), NEW("erin")}
    # erin only of this run (bob is opted out). With a shared store (PostgreSQL) the first run is another
    # replica of the deployment: dave, whom it saw under the old secret, is in the union too.
    shared = app[INGEST_KEY].shared_sketches
    if shared is not None:
        await shared.tick()
    assert value(registry, "clary_active_users", tier="lite", window="5m") == (2 if shared is not None else 1)

    # Deletion finds rows stored under either secret.
    resp = await client.delete("/api/v1/users/alice", headers=ADMIN)
    assert await resp.json() == {"removed": {"feedback": 1, "notifications": 0, "activity": 1, "errors": 0, "consents": 0}, "total": 2}
    resp = await client.delete("/api/v1/users/dave", headers=ADMIN)
    assert (await resp.json())["removed"]["activity"] == 1
    assert {r[0] for r in db.activity()} == {NEW("erin")}

    # Opt-in removes the old-secret opt-out: bob is tracked again, under the new secret.
    assert (await client.post("/api/v1/users/bob/opt-in", headers=ADMIN)).status == 200
    assert db.opted_out() == set()
    await client.post("/api/v1/events", headers=INGEST, json={"events": [
        {"type": "user_action", "tier": "lite", "action": "view", "user_id": "bob"}]})
    await app[INGEST_KEY].flush_activity()
    assert NEW("bob") in {r[0] for r in db.activity()}


async def test_a_previous_secret_is_needed_until_nothing_stored_uses_it(aiohttp_client, tmp_path):
    await _with_old_secret(aiohttp_client, tmp_path)
    rotated = {"hmac_secret": NEW_SECRET, "hmac_previous_secrets": [SECRET]}
    _, client = await app_client(aiohttp_client, tmp_path, CollectorRegistry(), **rotated)
    await client.close()
    # Dropped while rows of before the rotation exist: refused, naming what it would orphan.
    with pytest.raises(StorageError) as caught:
        await app_client(aiohttp_client, tmp_path, CollectorRegistry(), hmac_secret=NEW_SECRET)
    message = str(caught.value)
    assert "1 opt-outs, 1 feedback, 2 activity were stored before" in message
    assert f"previous HMAC secret (fingerprint {fingerprint(SECRET)})" in message
    # Once those rows are gone (deleted here; retention does it too), the old secret may go.
    _, client = await app_client(aiohttp_client, tmp_path, CollectorRegistry(), **rotated)
    for user in ("alice", "dave"):
        assert (await client.delete(f"/api/v1/users/{user}", headers=ADMIN)).status == 200
    assert (await client.post("/api/v1/users/bob/opt-in", headers=ADMIN)).status == 200
    await client.close()
    await app_client(aiohttp_client, tmp_path, CollectorRegistry(), hmac_secret=NEW_SECRET)
    assert json.loads(_meta(tmp_path)["hmac_retired"]) == []


async def test_a_new_store_records_the_fingerprint_never_the_secret(aiohttp_client, tmp_path):
    await app_client(aiohttp_client, tmp_path, CollectorRegistry())
    meta = _meta(tmp_path)
    assert meta["hmac_fingerprint"] == fingerprint(SECRET) and len(meta["hmac_fingerprint"]) == 16
    raw = store_backend.stored_bytes(tmp_path)
    assert SECRET.encode() not in raw


def test_previous_secrets_from_the_environment_and_the_file(tmp_path):
    config = load({}, environ={"CLARY_HMAC_PREVIOUS_SECRETS": f"{SECRET}, another-old-secret-0123456789"})
    assert config.hmac_previous_secrets == [SECRET, "another-old-secret-0123456789"]
    path = tmp_path / "clary.yml"
    path.write_text("hmac_previous_secrets: [short]\n")
    with pytest.raises(ConfigError, match="hmac_previous_secrets: Value error, every previous HMAC secret"):
        load({"config": str(path)}, environ={})


@pytest.mark.e2e
def test_the_cli_refuses_another_secret_in_one_line_and_rotates_with_previous_secrets(tmp_path):
    config = tmp_path / "clary.yml"
    config.write_text('api_keys: {"key-lite-alice": {tier: lite, user: alice}}\n'
                      'admin_token: admin-token-0123456789abcdef\n')
    args = ("--config", str(config), "--data-dir", str(tmp_path / "data"), "--no-collector.gpu")
    port = support.free_port()
    base = f"http://{support.LOOPBACK}:{port}"
    with support.exporter(port, *args, env={"CLARY_HMAC_SECRET": SECRET}, log_path=tmp_path / "first.log"):
        status, _, _ = support.http_request(f"{base}/api/v1/feedback", "POST", {"type": "bug", "rating": 2},
                                            {"X-API-Key": "key-lite-alice"})
        assert status == 201
    refused = subprocess.run(support.exporter_cmd("--listen-address", f"{support.LOOPBACK}:{port}", *args),
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, cwd=support.ROOT,
                             env={**os.environ, "CLARY_HMAC_SECRET": NEW_SECRET}, check=False)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "another HMAC secret" in refused.stderr and "CLARY_HMAC_PREVIOUS_SECRETS" in refused.stderr
    rotated = {"CLARY_HMAC_SECRET": NEW_SECRET, "CLARY_HMAC_PREVIOUS_SECRETS": SECRET}
    with support.exporter(port, *args, env=rotated, log_path=tmp_path / "second.log"):
        status, _, body = support.http_request(f"{base}/api/v1/users/alice", "DELETE",
                                               headers={"Authorization": "Bearer admin-token-0123456789abcdef"})
        assert status == 200 and json.loads(body)["removed"] == {"feedback": 1, "notifications": 0, "activity": 1, "errors": 0, "consents": 0}
    log = (tmp_path / "second.log").read_text()
    assert f"rotated the HMAC secret from fingerprint {fingerprint(SECRET)}" in log
    assert SECRET not in log and NEW_SECRET not in log
