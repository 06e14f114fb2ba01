"""End to end alerting: exporter -> Prometheus (bundle rules) -> Alertmanager -> webhook.

A fresh exporter (no demo) is fed through its public API; a real Prometheus
loads the bundle's generated rules with a 1 s evaluation interval; a real
Alertmanager runs the bundle's routing tree with only the receiver URLs
pointed at a webhook receiver in this test. Asserts which receiver got which
alert with which labels, including the very first urgent bug report on a
fresh exporter (visible to increase() only because fixed children start at 0).

Time runs 60x faster here than in production, so the chain is proven in
seconds instead of minutes: the rules are the bundle's files with only every
``for:`` divided by 60 (``for: 2m`` holds an alert pending for 2 s), and the
Alertmanager config is the bundle's routing tree, matchers, ``continue`` and
inhibitions as generated, with only group_wait / group_interval /
repeat_interval divided by 60 (and Prometheus' resend delay, 1m, likewise).
The expressions, labels, annotations and routes are untouched. That every
``for:`` holds at its real length is checked by promtool against
alerts/tests/*.test.yml, at the real durations.

One exporter, Prometheus and Alertmanager serve the whole module; each test
waits for what it asserts (bounded, polling), never for a fixed time.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass
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
# Production minutes are test seconds.
TIME_SCALE = 60
PROMETHEUS_RESEND_DELAY = "1m"  # Prometheus' default --rules.alert.resend-delay


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, dict]] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path.strip("/"), json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _webhook_receiver():
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
    return [a for path, payload in list(_Receiver.received) if path == receiver_name for a in payload["alerts"]]


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


def _license_validations(base: str, result: str, count: int) -> None:
    events = [{"type": "license_validation", "tier": "standard", "result": result} for _ in range(count)]
    status, body = _post(f"{base}/api/v1/events", {"events": events},
                         {"Authorization": f"Bearer {INGEST_TOKEN}"})
    assert status == 200 and body["accepted"] == count, body


# --- the bundle, 60x faster ------------------------------------------------------


def faster_rules(rule_files: list[Path], dest: Path, factor: float = TIME_SCALE) -> list[Path]:
    """Copies of ``rule_files`` in ``dest`` with every ``for:`` divided by ``factor``."""
    dest.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in rule_files:
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            assert "interval" not in group, f"{path.name}: scale the group interval too"
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = support.scaled_duration(rule["for"], factor)
        (dest / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
        copies.append(dest / path.name)
    return copies


def faster_routes(config: dict, factor: float = TIME_SCALE) -> dict:
    """``config`` with group_wait / group_interval / repeat_interval of every route divided by ``factor``."""
    def scale(route: dict) -> None:
        for key in ("group_wait", "group_interval", "repeat_interval"):
            if key in route:
                route[key] = support.scaled_duration(route[key], factor)
        for child in route.get("routes", ()):
            scale(child)

    scale(config["route"])
    return config


def test_the_faster_copies_change_only_durations(tmp_path):
    """What the module's stack runs is the bundle, only faster."""
    copies = faster_rules(RULES, tmp_path)
    scaled = 0
    for original, copy in zip(RULES, copies, strict=True):
        before, after = yaml.safe_load(original.read_text()), yaml.safe_load(copy.read_text())
        for g_before, g_after in zip(before["groups"], after["groups"], strict=True):
            for r_before, r_after in zip(g_before["rules"], g_after["rules"], strict=True):
                if "for" in r_before:
                    scaled += 1
                    assert support.duration_ms(r_after.pop("for")) * TIME_SCALE == pytest.approx(
                        support.duration_ms(r_before.pop("for")), abs=TIME_SCALE)
                assert r_after == r_before
    assert scaled >= 2  # at least the license errors and the error budget burn wait
    bundle = alertmanager_config(Config())
    fast = faster_routes(alertmanager_config(Config()))
    waits = {(r["receiver"], r["group_wait"]) for r in fast["route"]["routes"]}
    assert {("clary-support", "167ms"), ("clary-oncall-pager", "500ms")} <= waits  # 10s and 30s in the bundle

    def strip(route):
        return {k: [strip(r) for r in v] if k == "routes" else v for k, v in route.items()
                if k not in ("group_wait", "group_interval", "repeat_interval")}

    assert strip(fast["route"]) == strip(bundle["route"])
    assert fast["receivers"] == bundle["receivers"] and fast["inhibit_rules"] == bundle["inhibit_rules"]


# --- one stack for the module ------------------------------------------------------


@dataclass
class AlertingStack:
    exporter_url: str
    prometheus: support.Prometheus


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("alerting")
    am_port, exporter_port = support.free_port(), support.free_port()
    exporter_target, am_target = f"{support.LOOPBACK}:{exporter_port}", f"{support.LOOPBACK}:{am_port}"
    prom_config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "clary-exporter", "static_configs": [{"targets": [exporter_target]}]}],
        "rule_files": [str(p) for p in faster_rules(RULES, tmp / "rules")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [am_target]}]}]},
    }
    config = tmp / "clary.yml"
    config.write_text(yaml.safe_dump({
        "hmac_secret": "e2e-secret-0123456789abcdef",
        "api_keys": {API_KEY: {"tier": "standard", "user": "e2e-user"}},
        "collectors": {"gpu": False},
        "data_dir": str(tmp / "data"),
    }))
    resend = support.scaled_duration(PROMETHEUS_RESEND_DELAY, TIME_SCALE)
    with _webhook_receiver() as receiver:
        hook = f"http://{support.LOOPBACK}:{receiver.server_address[1]}"
        am_config = faster_routes(alertmanager_config(
            Config(webhook_urls={name: f"{hook}/{name}" for name in RECEIVERS})))
        # Prometheus first: its ~5 s until the first scrape overlaps the exporter's start-up.
        with support.prometheus_from(prom_config, tmp / "prometheus", f"--rules.alert.resend-delay={resend}") as prom, \
                support.alertmanager(am_config, tmp / "alertmanager", port=am_port), \
                support.exporter(exporter_port, "--config", str(config), env={"CLARY_INGEST_TOKENS": INGEST_TOKEN},
                                 log_path=tmp / "exporter.log"):
            # Prometheus has seen the pre-created zero series (twice) before any event arrives.
            support.wait_until(
                lambda: prom.query('count_over_time(clary_feedback_urgent_total{tier="standard"}[1m]) >= 2')
                and prom.query('clary_feedback_urgent_total{tier="standard"} == 0'),
                timeout=30, interval=0.1, what="urgent counter at 0, scraped twice")
            yield AlertingStack(f"http://{exporter_target}", prom)


def test_first_urgent_bug_reaches_support_and_development_not_the_pager(stack):
    status, _ = _post(f"{stack.exporter_url}/api/v1/feedback",
                      {"type": "bug", "rating": 1, "text": "export crashes"}, {"X-API-Key": API_KEY})
    assert status == 201
    # One urgent bug: support AND development get it (no `for:`; the support route's group wait).
    support.wait_until(lambda: _firing("clary-support", "ClaryUrgentBugReport")
                       and _firing("clary-development", "ClaryUrgentBugReport"),
                       timeout=30, interval=0.1, what="urgent bug at support and development")
    urgent = _firing("clary-development", "ClaryUrgentBugReport")[0]
    assert urgent["labels"]["tier"] == "standard" and urgent["labels"]["team"] == "support"
    assert not _firing("clary-oncall-pager", "ClaryUrgentBugReport")


def test_license_service_errors_page_and_rejected_keys_go_to_licensing(stack):
    """By cause: result="error" (the license service is broken) pages on-call; invalid keys are a
    licensing ticket and never reach the pager."""
    _license_validations(stack.exporter_url, "invalid", 30)
    _license_validations(stack.exporter_url, "error", 10)
    deadline = time.monotonic() + 45
    while not (_firing("clary-oncall-pager", "ClaryLicenseValidationErrors")
               and _firing("clary-licensing", "ClaryLicenseValidationFailureRatioHigh")):
        assert time.monotonic() < deadline, f"received: {[p for p, _ in _Receiver.received]}"
        _license_validations(stack.exporter_url, "error", 2)  # keep the 5m error ratio up
        _license_validations(stack.exporter_url, "invalid", 2)
        time.sleep(0.5)
    page = _firing("clary-oncall-pager", "ClaryLicenseValidationErrors")[0]
    assert page["labels"]["severity"] == "critical" and page["labels"]["tier"] == "standard"
    assert page["labels"]["team"] == "sre"
    assert page["annotations"]["runbook_url"].endswith("#clarylicensevalidationerrors")
    ticket = _firing("clary-licensing", "ClaryLicenseValidationFailureRatioHigh")[0]
    assert ticket["labels"]["team"] == "licensing" and ticket["labels"]["tier"] == "standard"
    # the rejected keys reached licensing only: not the pager, not the SRE ticket queue
    for receiver in ("clary-oncall-pager", "clary-ticket"):
        assert not _firing(receiver, "ClaryLicenseValidationFailureRatioHigh"), receiver
    # It paged only after waiting out its (scaled) `for:` as pending.
    pending = stack.prometheus.query(
        'max_over_time(ALERTS{alertname="ClaryLicenseValidationErrors", alertstate="pending"}[5m])')
    assert [r["metric"]["tier"] for r in pending] == ["standard"]


def test_watchdog_pings_the_dead_mans_switch_and_nothing_else_does(stack):
    # The dead man's switch is pinged, with the Watchdog only.
    support.wait_until(lambda: _alerts_for("clary-deadmansswitch"), timeout=30, interval=0.1,
                       what="Watchdog at the dead man's switch")
    assert {a["labels"]["alertname"] for a in _alerts_for("clary-deadmansswitch")} == {"Watchdog"}
