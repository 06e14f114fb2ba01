"""End to end alerting: exporter -> Prometheus (bundle rules) -> Alertmanager -> webhook.

A fresh exporter (no demo) is fed through its public API; a real Prometheus
loads the bundle's generated rules with a 1 s evaluation interval; a real
Alertmanager runs the bundle's routing tree with only the receiver URLs
pointed at a webhook receiver in this test. Asserts which receiver got which
alert with which labels, including the very first urgent bug report on a
fresh exporter (visible to increase() only because fixed children start at 0).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from alerts.alertmanager_config import alertmanager_config
from alerts.config import RECEIVERS, Config
from tests import support

pytestmark = pytest.mark.e2e

RULES = sorted((support.ROOT / "alerts" / "rules").glob("*.yml"))
INGEST_TOKEN = "e2e-ingest-token"
API_KEY = "e2e-standard-key"


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, dict]] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path.strip("/"), json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    _Receiver.received = []
    server = ThreadingHTTPServer((support.LOOPBACK, 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _alerts_for(receiver_name: str) -> list[dict]:
    return [a for path, payload in _Receiver.received if path == receiver_name for a in payload["alerts"]]


def _firing(receiver_name: str, alertname: str) -> list[dict]:
    return [a for a in _alerts_for(receiver_name)
            if a["labels"]["alertname"] == alertname and a["status"] == "firing"]


def _post(url: str, body: dict, headers: dict) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _license_failures(base: str, count: int) -> None:
    events = [{"type": "license_validation", "tier": "standard", "result": "invalid"} for _ in range(count)]
    status, result = _post(f"{base}/api/v1/events", {"events": events},
                           {"Authorization": f"Bearer {INGEST_TOKEN}"})
    assert status == 200 and result["accepted"] == count, result


def test_urgent_bug_and_license_failures_reach_the_right_receivers(receiver, tmp_path):
    hook = f"http://{support.LOOPBACK}:{receiver.server_address[1]}"
    am_config = alertmanager_config(Config(webhook_urls={name: f"{hook}/{name}" for name in RECEIVERS}))
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(am_config))
    config = tmp_path / "clary.yml"
    config.write_text(yaml.safe_dump({
        "hmac_secret": "e2e-secret-0123456789abcdef",
        "api_keys": {API_KEY: {"tier": "standard", "user": "e2e-user"}},
        "collectors": {"gpu": False},
        "data_dir": str(tmp_path / "data"),
    }))
    am_port, exporter_port = support.free_port(), support.free_port()
    am_cmd = [
        support.binary("alertmanager", "prometheus-alertmanager"),
        f"--config.file={tmp_path / 'alertmanager.yml'}",
        f"--storage.path={tmp_path / 'am'}",
        f"--web.listen-address={support.LOOPBACK}:{am_port}",
        "--cluster.listen-address=",
    ]
    exporter_env = {"CLARY_INGEST_TOKENS": INGEST_TOKEN}
    base = f"http://{support.LOOPBACK}:{exporter_port}"
    with support.running(am_cmd, f"http://{support.LOOPBACK}:{am_port}/-/ready", log_path=tmp_path / "am.log"), \
            support.exporter(exporter_port, "--config", str(config), env=exporter_env,
                             log_path=tmp_path / "exporter.log"), \
            support.prometheus([f"{support.LOOPBACK}:{exporter_port}"], rule_files=RULES,
                               alertmanager=f"{support.LOOPBACK}:{am_port}") as prom:
        # Let Prometheus see the pre-created zero series before the first event.
        support.wait_until(lambda: prom.query('clary_feedback_urgent_total{tier="standard"} == 0'),
                           timeout=30, what="urgent counter at 0")
        time.sleep(2)
        status, _ = _post(f"{base}/api/v1/feedback", {"type": "bug", "rating": 1, "text": "export crashes"},
                          {"X-API-Key": API_KEY})
        assert status == 201
        _license_failures(base, 30)

        # One urgent bug: support AND development get it (no `for:`, 10 s group wait).
        support.wait_until(lambda: _firing("clary-support", "ClaryUrgentBugReport")
                           and _firing("clary-development", "ClaryUrgentBugReport"),
                           timeout=90, interval=1, what="urgent bug at support and development")
        urgent = _firing("clary-development", "ClaryUrgentBugReport")[0]
        assert urgent["labels"]["tier"] == "standard" and urgent["labels"]["team"] == "support"
        assert not _firing("clary-oncall-pager", "ClaryUrgentBugReport")

        # License failures: a spike pages on-call once its `for: 2m` has passed.
        deadline = time.monotonic() + 240
        while not _firing("clary-oncall-pager", "ClaryLicenseValidationFailureSpike"):
            assert time.monotonic() < deadline, f"no page; received: {[p for p, _ in _Receiver.received]}"
            _license_failures(base, 3)  # keep the 5m failure rate up
            time.sleep(5)
        page = _firing("clary-oncall-pager", "ClaryLicenseValidationFailureSpike")[0]
        assert page["labels"]["severity"] == "critical" and page["labels"]["tier"] == "standard"
        assert page["annotations"]["runbook_url"].endswith("#clarylicensevalidationfailurespike")
        # The dead man's switch is pinged too.
        assert _alerts_for("clary-deadmansswitch")
        assert {a["labels"]["alertname"] for a in _alerts_for("clary-deadmansswitch")} == {"Watchdog"}
