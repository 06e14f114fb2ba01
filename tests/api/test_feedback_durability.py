"""Acknowledged feedback is durable: SIGKILL the exporter right after the 201, restart, find it."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest
import yaml

from tests import support
from tests.api_helpers import ADMIN, ADMIN_TOKEN, API_KEYS, SECRET

pytestmark = pytest.mark.e2e


def _args(tmp_path) -> tuple[str, ...]:
    path = tmp_path / "clary.yml"
    # No feedback rate limit: one key submits from four threads as fast as it can.
    path.write_text(yaml.safe_dump({"hmac_secret": SECRET, "admin_token": ADMIN_TOKEN, "api_keys": API_KEYS,
                                    "collectors": {"system": False, "gpu": False}, "feedback_rate_per_minute": 0}))
    return ("--config", str(path), "--data-dir", str(tmp_path / "data"))


def _post(base: str, body: dict, key: str = "key-lite-alice") -> tuple[int, dict]:
    request = urllib.request.Request(f"{base}/api/v1/feedback", data=json.dumps(body).encode(), method="POST",
                                     headers={"X-API-Key": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


def _stored(base: str) -> dict[str, dict]:
    found, cursor = {}, None
    while True:
        query = "?limit=500" + (f"&cursor={cursor}" if cursor else "")
        status, body = support.http_get(f"{base}/api/v1/feedback{query}", headers=ADMIN)
        assert status == 200, body
        page = json.loads(body)
        found.update({item["id"]: item for item in page["items"]})
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def test_feedback_acknowledged_before_sigkill_is_there_after_restart(tmp_path):
    port = support.free_port()
    base = f"http://{support.LOOPBACK}:{port}"
    args = _args(tmp_path)
    with support.exporter(port, *args, log_path=tmp_path / "first.log") as proc:
        status, created = _post(base, {"type": "bug", "rating": 2, "text": "saved right before the crash",
                                       "metadata": {"build": "2.4.1"}})
        proc.kill()  # SIGKILL right after the 201: no shutdown hook runs
        assert status == 201
        assert proc.wait(10) == -9
    with support.exporter(port, *args, log_path=tmp_path / "second.log"):
        stored = _stored(base)
    assert list(stored) == [created["id"]]
    item = stored[created["id"]]
    assert (item["tier"], item["type"], item["rating"], item["urgent"], item["text"], item["metadata"]) == (
        "lite", "bug", 2, True, "saved right before the crash", {"build": "2.4.1"})
    assert item["created_at"] == created["created_at"]


def test_every_acknowledged_feedback_survives_a_kill_under_concurrent_load(tmp_path):
    port = support.free_port()
    base = f"http://{support.LOOPBACK}:{port}"
    args = _args(tmp_path)
    acked: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def submit(worker: int) -> None:
        n = 0
        while not stop.is_set() and n < 500:  # bounded either way
            text = f"w{worker}-{n}"
            n += 1
            try:
                status, body = _post(base, {"type": "general", "rating": 4, "text": text}, key="key-pro-bob")
            except (urllib.error.URLError, OSError, ValueError):
                return  # the exporter is gone: an unacknowledged request may or may not be stored
            if status == 201:
                with lock:
                    acked[body["id"]] = text

    with support.exporter(port, *args, log_path=tmp_path / "first.log") as proc:
        workers = [threading.Thread(target=submit, args=(i,)) for i in range(4)]
        for worker in workers:
            worker.start()
        support.wait_until(lambda: len(acked) >= 40, timeout=30, interval=0.01, what="40 acknowledged")
        proc.kill()
        proc.wait(10)
        stop.set()
        for worker in workers:
            worker.join(15)
    assert len(acked) >= 40
    with support.exporter(port, *args, log_path=tmp_path / "second.log"):
        stored = _stored(base)
    missing = {i: t for i, t in acked.items() if i not in stored}
    assert missing == {}
    assert all(stored[i]["text"] == t for i, t in acked.items())
