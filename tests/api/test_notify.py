"""Urgent feedback reaches webhooks in the background, with retries that survive a restart."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from typing import Self

import pytest
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter.api.app import INGEST as INGEST_KEY
from exporter.api.notify import Notifier, summary
from exporter.server.app import create_app
from tests import support
from tests.api_helpers import (ADMIN_TOKEN, API_KEYS, SECRET, WebhookReceiver, database, make_config,
                               thread_server)

URL = "/api/v1/feedback"
BOB = {"X-API-Key": "key-pro-bob"}


@pytest.fixture
async def receiver():
    hook = await WebhookReceiver().start()
    yield hook
    await hook.stop()


def fast_retries(app, base: float = 0.05, cap: float = 0.2) -> Notifier:
    notifier = app[INGEST_KEY].notifier
    notifier.base_backoff, notifier.max_backoff = base, cap
    return notifier


async def test_urgent_feedback_reaches_every_webhook(aiohttp_client, tmp_path, receiver):
    second = await WebhookReceiver().start()
    try:
        app = create_app(make_config(tmp_path, webhooks=[receiver.url, second.url]), CollectorRegistry())
        client = await aiohttp_client(app)
        resp = await client.post(URL, json={"type": "bug", "rating": 1, "text": "export loses tables",
                                            "metadata": {"app_version": "2.4.0"}}, headers=BOB)
        assert resp.status == 201
        created = await resp.json()
        for hook in (receiver, second):
            (payload,) = await hook.wait(1)
            assert payload["event"] == "urgent_feedback"
            assert payload["feedback"] == {"id": created["id"], "created_at": created["created_at"],
                                           "tier": "professional", "type": "bug", "rating": 1,
                                           "text": "export loses tables", "metadata": {"app_version": "2.4.0"}}
            assert "professional" in payload["text"] and "export loses tables" in payload["text"]
            assert hook.headers[0]["X-Clary-Delivery"].startswith(created["id"] + "/")
            assert "bob" not in json.dumps(payload)
        db = database(tmp_path)
        await _until(lambda: db.outbox() == [], "outbox drained")
        db.close()
    finally:
        await second.stop()


async def test_only_urgent_feedback_notifies(aiohttp_client, tmp_path, receiver):
    app = create_app(make_config(tmp_path, webhooks=[receiver.url]), CollectorRegistry())
    client = await aiohttp_client(app)
    for body in ({"type": "bug", "rating": 3}, {"type": "survey", "rating": 1}, {"type": "general", "rating": 2}):
        assert (await client.post(URL, json=body, headers=BOB)).status == 201
    # Outbox rows are written in the feedback's own transaction: none for these.
    db = database(tmp_path)
    assert db.outbox() == []
    db.close()
    urgent = await (await client.post(URL, json={"type": "bug", "rating": 2}, headers=BOB)).json()
    await receiver.wait(1)
    await asyncio.sleep(0.2)
    assert [p["feedback"]["id"] for p in receiver.received] == [urgent["id"]]


class HungReceiver:
    """A webhook that holds every POST until ``release`` is set (then answers 200)."""

    def __init__(self):
        self.release = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _hold(self, request: web.Request) -> web.Response:
        await self.release.wait()
        return web.Response()

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/hook", self._hold)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = support.free_port()
        await web.TCPSite(self._runner, support.LOOPBACK, port).start()
        self.url = f"http://{support.LOOPBACK}:{port}/hook"
        return self

    async def __aexit__(self, *exc) -> None:
        self.release.set()
        await self._runner.cleanup()


async def test_a_slow_or_dead_webhook_never_delays_the_request(aiohttp_client, tmp_path):
    dead = f"http://{support.LOOPBACK}:{support.free_port()}/hook"
    async with HungReceiver() as hung:
        app = create_app(make_config(tmp_path, webhooks=[hung.url, dead]), CollectorRegistry())
        client = await aiohttp_client(app)
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            resp = await client.post(URL, json={"type": "bug", "rating": 1, "text": "x"}, headers=BOB)
            timings.append(time.perf_counter() - started)
            assert resp.status == 201
        assert max(timings) < 2.0, timings  # the hung receiver would hold a request for 10 s (client timeout)


async def test_each_delivery_is_recorded_when_it_is_done_not_with_its_batch(aiohttp_client, tmp_path, receiver):
    """A replica killed while one receiver hangs must not send the rows already delivered again."""
    async with HungReceiver() as hung:
        app = create_app(make_config(tmp_path, webhooks=[receiver.url, hung.url]), CollectorRegistry())
        client = await aiohttp_client(app)
        assert (await client.post(URL, json={"type": "bug", "rating": 1, "text": "x"}, headers=BOB)).status == 201
        await receiver.wait(1)
        db = database(tmp_path)
        # Well before the hung POST's 10 s timeout, which would also end the batch.
        await _until(lambda: [row[2] for row in db.outbox()] == [hung.url], "the fast receiver's row deleted",
                     timeout=5)
        hung.release.set()
        await _until(lambda: db.outbox() == [], "the hung receiver's row deleted once it answered")
        db.close()


async def test_a_receiver_that_is_down_gets_the_delivery_when_it_comes_back(aiohttp_client, tmp_path):
    hook = WebhookReceiver()  # not started yet: connection refused
    app = create_app(make_config(tmp_path, webhooks=[hook.url]), CollectorRegistry())
    fast_retries(app)
    client = await aiohttp_client(app)
    created = await (await client.post(URL, json={"type": "bug", "rating": 1, "text": "down"}, headers=BOB)).json()
    db = database(tmp_path)
    await _until(lambda: db.outbox() and db.outbox()[0][3] >= 3, "three failed attempts")
    assert db.outbox()[0][5] == "ClientConnectorError"
    await hook.start()
    try:
        (payload,) = await hook.wait(1)
        assert payload["feedback"]["id"] == created["id"]
        await _until(lambda: db.outbox() == [], "outbox drained")
        db.close()
    finally:
        await hook.stop()


async def test_error_statuses_are_retried_until_accepted(aiohttp_client, tmp_path):
    hook = await WebhookReceiver(status=503).start()
    try:
        app = create_app(make_config(tmp_path, webhooks=[hook.url]), CollectorRegistry())
        notifier = fast_retries(app)
        client = await aiohttp_client(app)
        await client.post(URL, json={"type": "bug", "rating": 1}, headers=BOB)
        await hook.wait(3)
        db = database(tmp_path)
        assert db.outbox()[0][5] == "HTTP 503"
        hook.status = 200
        await hook.wait(4)
        await _until(lambda: db.outbox() == [], "outbox drained")
        db.close()
        assert notifier.delivered == 1 and notifier.failed_attempts >= 3
        ids = {h["X-Clary-Delivery"] for h in hook.headers}
        assert len(ids) == 1  # the same delivery id every time: receivers can de-duplicate
    finally:
        await hook.stop()


def test_backoff_is_exponential_capped_and_jittered():
    notifier = Notifier(store=None, urls=[], base_backoff=1.0, max_backoff=60.0, rng=random.Random(7))
    for attempts, nominal in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (30, 60)]:
        delays = [notifier.backoff(attempts) for _ in range(50)]
        assert all(0.8 * nominal <= d <= 1.2 * nominal for d in delays), (attempts, delays[:3])
        assert len(set(delays)) > 1


def test_summary_truncates_long_text():
    record = {"id": "i", "created_at": "t", "tier": "lite", "type": "bug", "rating": 1, "text": "y" * 5000,
              "metadata": None}
    body = summary(record)
    assert len(body["feedback"]["text"]) == 1001 and body["feedback"]["text"].endswith("…")


async def _until(check, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- across a restart of a real exporter process ------------------------------------------------

class SyncReceiver:
    def __init__(self):
        self.received: list[dict] = []
        self.lock = threading.Lock()
        self.app = web.Application()
        self.app.router.add_post("/hook", self._hook)

    async def _hook(self, request):
        payload = await request.json()
        with self.lock:
            self.received.append(payload)
        return web.Response()


def _config_file(tmp_path, webhook: str) -> str:
    path = tmp_path / "clary.yml"
    path.write_text(yaml.safe_dump({
        "hmac_secret": SECRET, "admin_token": ADMIN_TOKEN, "api_keys": API_KEYS, "webhooks": [webhook],
        "collectors": {"system": False, "gpu": False},
    }))
    return str(path)


def _post_feedback(base: str, body: dict) -> tuple[int, dict]:
    import urllib.request

    request = urllib.request.Request(f"{base}{URL}", data=json.dumps(body).encode(), method="POST",
                                     headers={**BOB, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


@pytest.mark.e2e
@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_pending_delivery_survives_an_exporter_restart(tmp_path, how):
    hook_port = support.free_port()
    hook_url = f"http://{support.LOOPBACK}:{hook_port}/hook"
    config = _config_file(tmp_path, hook_url)
    data_dir = tmp_path / "data"
    port = support.free_port()
    base = f"http://{support.LOOPBACK}:{port}"
    args = ("--config", config, "--data-dir", str(data_dir))
    with support.exporter(port, *args, log_path=tmp_path / "first.log") as proc:
        status, created = _post_feedback(base, {"type": "bug", "rating": 1, "text": "crash on save"})
        assert status == 201 and created["urgent"] is True
        db = database(data_dir)
        support.wait_until(lambda: db.outbox() and db.outbox()[0][3] >= 1, timeout=15, what="a failed attempt")
        db.close()
        if how == "sigkill":
            proc.kill()
        else:
            proc.terminate()
        proc.wait(10)
    receiver = SyncReceiver()
    with thread_server(receiver.app, port=hook_port):
        with support.exporter(port, *args, log_path=tmp_path / "second.log"):
            support.wait_until(lambda: receiver.received, timeout=20, what="delivery after restart")
            db = database(data_dir)
            support.wait_until(lambda: db.outbox() == [], timeout=10, what="outbox drained")
            db.close()
    assert [p["feedback"]["id"] for p in receiver.received] == [created["id"]]
    assert receiver.received[0]["feedback"]["text"] == "crash on save"
