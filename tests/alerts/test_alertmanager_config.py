"""alerts/alertmanager.yml: amtool checks, routes for every alert kind, and
the real Alertmanager binary serving it (readiness, routing, inhibition).

Debian names the server ``prometheus-alertmanager``; upstream ``alertmanager``.
Either is accepted; none fails the test (``make system-deps`` installs it).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import yaml

from alerts import checks
from alerts.config import RECEIVERS
from tests.support import ROOT

AM_CONFIG = checks.ALERTS_DIR / "alertmanager.yml"

PAGER = ["clary-oncall-pager"]
TICKET = ["clary-ticket"]
CHAT = ["clary-chat"]
SUPPORT_AND_DEV = ["clary-support", "clary-development"]
LICENSING = ["clary-licensing"]
DEADMAN = ["clary-deadmansswitch"]

# Every alert rule (alertname, severity) and where it must land. A new alert
# fails test_every_alert_kind_has_an_expected_receiver until it is added here,
# and test_the_receiver_table_in_the_docs_is_this_one until docs/alerting.md lists it.
EXPECTED_RECEIVERS: dict[tuple[str, str], list[str]] = {
    ("ClaryErrorBudgetBurn", "critical"): PAGER,
    ("ClaryErrorBudgetBurn", "warning"): TICKET,
    ("ClaryHttpErrorSpike", "warning"): TICKET,
    ("ClaryHttpLatencyHigh", "warning"): TICKET,
    ("ClaryDocumentFailureRatioHigh", "warning"): TICKET,
    ("ClaryUnhandledExceptions", "warning"): TICKET,
    ("ClaryErrorGroupNewOrRegressed", "warning"): TICKET,
    ("ClaryQueueBacklog", "warning"): TICKET,
    # license: the service failing pages; keys, expiry and compliance are the licensing team's tickets
    ("ClaryLicenseValidationErrors", "critical"): PAGER,
    ("ClaryLicenseValidationFailureRatioHigh", "warning"): LICENSING,
    ("ClaryLicenseValidationsStopped", "warning"): TICKET,
    ("ClaryLicenseExpiring", "warning"): LICENSING,
    ("ClaryLicenseExpired", "warning"): LICENSING,
    ("ClaryLicenseUsageOverLimit", "warning"): LICENSING,
    ("ClaryLicenseUsageNearLimit", "info"): LICENSING,
    ("ClaryInferenceFailureRatioHigh", "warning"): TICKET,
    ("ClaryModelUnavailable", "critical"): PAGER,
    ("ClaryLlmFailureRatioHigh", "warning"): TICKET,
    ("ClaryLlmLatencyHigh", "warning"): TICKET,
    ("ClaryGpuTemperatureHigh", "warning"): TICKET,
    ("ClaryGpuTemperatureHigh", "critical"): PAGER,
    ("ClaryGpuMemorySaturated", "warning"): TICKET,
    ("ClaryGpuEccUncorrectedErrors", "critical"): PAGER,
    ("ClaryGpuMemoryRepairPending", "warning"): TICKET,
    ("ClaryGpuRowRemapFailed", "critical"): PAGER,
    ("ClaryGpuThermalThrottling", "warning"): TICKET,
    ("ClaryGpuPowerThrottling", "warning"): TICKET,
    ("ClaryGpuDevicesMissing", "warning"): TICKET,
    ("ClaryExporterCollectorFailing", "warning"): TICKET,
    # one replica down is a ticket; every replica down, or no target, pages
    ("ClaryExporterDown", "warning"): TICKET,
    ("ClaryExporterDown", "critical"): PAGER,
    ("ClaryExporterAbsent", "critical"): PAGER,
    ("ClaryServiceDown", "warning"): TICKET,
    ("ClaryServiceDown", "critical"): PAGER,
    ("ClaryExporterLabelOverflow", "warning"): TICKET,
    ("ClaryExporterStorageFailing", "critical"): PAGER,
    ("ClaryEventsRejected", "warning"): TICKET,
    ("ClaryUrgentBugReport", "warning"): SUPPORT_AND_DEV,
    ("ClaryFeedbackRatingDrop", "warning"): SUPPORT_AND_DEV,
    ("Watchdog", "info"): DEADMAN,
}
RECEIVER_TABLE = ROOT / "docs" / "alerting.md"


def _alert_label_sets() -> list[dict[str, str]]:
    """The static labels of every alert rule, as Alertmanager receives them."""
    seen, out = set(), []
    for _, rule in checks.iter_rules():
        if "alert" in rule:
            labels = {"alertname": rule["alert"], **rule["labels"]}
            key = tuple(sorted(labels.items()))
            if key not in seen:
                seen.add(key)
                out.append(labels)
    return out


def _amtool() -> str:
    return checks.binary("amtool")


def _routes_test(labels: dict[str, str], expected: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = [_amtool(), "config", "routes", "test", f"--config.file={AM_CONFIG}"]
    if expected is not None:
        cmd.append(f"--verify.receivers={','.join(expected)}")
    cmd += [f"{k}={v}" for k, v in labels.items()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_amtool_check_config_accepts_the_config():
    proc = subprocess.run([_amtool(), "check-config", str(AM_CONFIG)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
    assert " - 5 inhibit rules" in proc.stdout and f" - {len(RECEIVERS)} receivers" in proc.stdout


def test_every_alert_kind_has_an_expected_receiver():
    kinds = {(labels["alertname"], labels["severity"]) for labels in _alert_label_sets()}
    assert kinds == set(EXPECTED_RECEIVERS)


@pytest.mark.parametrize(
    "labels",
    _alert_label_sets(),
    ids=lambda labels: "-".join(v for k, v in labels.items() if k in ("alertname", "severity", "tier", "long_window")),
)
def test_amtool_routes_each_alert_to_its_receivers(labels):
    expected = EXPECTED_RECEIVERS[(labels["alertname"], labels["severity"])]
    # the labels the alert fires with: the rule's own, and those of the series it reads
    labels = {"tier": "professional", "cluster": "eu-1", "job": "clary-exporter", "instance": "10.0.0.7:25279", **labels}
    proc = _routes_test(labels, expected)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ",".join(expected)


def test_no_licensing_alert_reaches_the_pager_and_the_license_service_failing_does():
    by_team: dict[str, set[str]] = {}
    for labels in _alert_label_sets():
        receivers = EXPECTED_RECEIVERS[(labels["alertname"], labels["severity"])]
        by_team.setdefault(labels["team"], set()).update(receivers)
    assert by_team["licensing"] == set(LICENSING)
    assert by_team["support"] == set(SUPPORT_AND_DEV)
    assert EXPECTED_RECEIVERS[("ClaryLicenseValidationErrors", "critical")] == PAGER
    # a licensing alert that someone marks critical still goes to licensing: team before severity
    proc = _routes_test({"alertname": "ClaryLicenseExpired", "severity": "critical", "team": "licensing"}, LICENSING)
    assert proc.returncode == 0 and proc.stdout.strip() == "clary-licensing", proc.stdout + proc.stderr


def _docs_receiver_table() -> dict[tuple[str, str], list[str]]:
    """(alert, severity) -> receivers, from the "| alert | severity | team | fires when | receiver |" table."""
    table: dict[tuple[str, str], list[str]] = {}
    for line in RECEIVER_TABLE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`") and cells[4].startswith("`clary-"):
            alert, severity = cells[0].strip("`"), cells[1]
            assert (alert, severity) not in table, f"docs/alerting.md lists {alert} {severity} twice"
            table[(alert, severity)] = [r.strip(" `") for r in cells[4].split("+")]
    return table


def test_the_receiver_table_in_the_docs_is_this_one():
    """docs/alerting.md's table says where every alert goes; it cannot drift from the routing."""
    assert _docs_receiver_table() == EXPECTED_RECEIVERS


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        # no severity at all: a ticket, never silently dropped
        ({"alertname": "SomethingNew"}, TICKET),
        # the Watchdog goes to the dead man's switch whatever its severity
        ({"alertname": "Watchdog", "severity": "critical"}, DEADMAN),
        # anything of the support team reaches support and development, never the pager
        ({"alertname": "ClaryUrgentBugReport", "severity": "critical", "team": "support", "tier": "lite"}, SUPPORT_AND_DEV),
        # the team does not change where severities go otherwise
        ({"alertname": "ClaryModelUnavailable", "severity": "critical", "team": "ml", "model": "ocr-fast"}, PAGER),
        # info of a team without receivers is chat; of licensing, the licensing queue
        ({"alertname": "ClaryGpuSomething", "severity": "info", "team": "sre"}, CHAT),
        ({"alertname": "ClaryLicenseUsageNearLimit", "severity": "info", "team": "licensing"}, LICENSING),
    ],
)
def test_amtool_routes_edge_cases(labels, expected):
    proc = _routes_test(labels, expected)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ",".join(expected)


def test_amtool_route_verification_can_fail():
    proc = _routes_test({"alertname": "ClaryExporterDown", "severity": "critical"}, CHAT)
    assert proc.returncode != 0
    assert proc.stdout.strip().splitlines()[0] == "clary-oncall-pager"


def _config() -> dict:
    return yaml.safe_load(AM_CONFIG.read_text())


def test_grouping_and_timings():
    route = _config()["route"]
    assert route["receiver"] == "clary-ticket"
    assert route["group_by"] == ["alertname", "cluster", "tier"]
    by_receiver = {r["receiver"]: r for r in route["routes"]}
    # pages go out fast and repeat while unresolved; tickets wait and repeat daily
    assert by_receiver["clary-oncall-pager"]["group_wait"] == "30s"
    assert by_receiver["clary-oncall-pager"]["repeat_interval"] == "4h"
    assert by_receiver["clary-ticket"]["repeat_interval"] == "24h"
    # the heartbeat is sent every minute, on its own
    deadman = by_receiver["clary-deadmansswitch"]
    assert (deadman["group_wait"], deadman["group_interval"], deadman["repeat_interval"]) == ("0s", "1m", "1m")
    assert deadman["group_by"] == ["alertname"]
    # routes are tried in order: the Watchdog and the teams before severities
    assert [r["matchers"] for r in route["routes"]] == [
        ['alertname="Watchdog"'],
        ['team="support"'],
        ['team="licensing"'],
        ['severity="critical"'],
        ['severity="warning"'],
        ['severity="info"'],
    ]


def test_inhibition_rules():
    rules = _config()["inhibit_rules"]
    first = rules[0]
    assert first["source_matchers"] == ['severity="critical"']
    assert first["target_matchers"] == ['severity="warning"']
    # the same SLO only: a latency page must not hide an availability ticket
    assert {"alertname", "tier", "slo", "cluster"} <= set(first["equal"])


def test_every_receiver_is_routed_to_and_every_route_has_a_receiver():
    config = _config()
    defined = {r["name"] for r in config["receivers"]}

    def used(route) -> Iterator[str]:
        yield route["receiver"]
        for child in route.get("routes", []):
            yield from used(child)

    assert set(used(config["route"])) == defined == set(RECEIVERS)


# --------------------------------------------------------------------------
# The real Alertmanager


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _http(method: str, url: str, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        payload = response.read()
        return response.status, (json.loads(payload) if payload.strip().startswith((b"[", b"{")) else payload)


@pytest.fixture
def alertmanager(tmp_path) -> Iterator[str]:
    """A real Alertmanager on a free loopback port, serving alerts/alertmanager.yml."""
    binary = checks.binary("alertmanager", "prometheus-alertmanager")
    log_path = tmp_path / "alertmanager.log"
    for _attempt in range(3):  # another process may take the port between probe and bind
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={AM_CONFIG}",
                    f"--storage.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    f"--web.external-url={url}",
                    "--cluster.listen-address=",
                    "--log.level=info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if _http("GET", f"{url}/-/ready")[0] == 200:
                        break
                except (urllib.error.URLError, ConnectionError, OSError):
                    time.sleep(0.1)
            else:
                if proc.poll() is not None and "address already in use" in log_path.read_text():
                    continue
                pytest.fail(f"Alertmanager was not ready within 20s:\n{log_path.read_text()}")
            yield url
            return
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
    pytest.fail(f"Alertmanager could not bind a free port:\n{log_path.read_text()}")


def _alert(**labels) -> dict:
    return {"labels": labels, "annotations": {"summary": "test"}, "generatorURL": "http://prometheus.invalid/graph"}


def _wait_for(url: str, predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        alerts = _http("GET", f"{url}/api/v2/alerts")[1]
        by_key = {_key(a["labels"]): a for a in alerts}
        if predicate(by_key) or time.monotonic() > deadline:
            return by_key
        time.sleep(0.2)


def _key(labels: dict) -> tuple:
    return tuple(sorted(labels.items()))


def test_real_alertmanager_is_ready_routes_and_inhibits(alertmanager):
    url = alertmanager
    status, body = _http("GET", f"{url}/api/v2/status")
    assert status == 200 and body["config"]["original"].startswith("global:")

    burn_critical = _alert(alertname="ClaryErrorBudgetBurn", severity="critical", team="sre", tier="lite",
                           slo="availability", long_window="1h", short_window="5m")
    burn_warning = _alert(alertname="ClaryErrorBudgetBurn", severity="warning", team="sre", tier="lite",
                          slo="availability", long_window="1d", short_window="2h")
    burn_warning_other_tier = _alert(alertname="ClaryErrorBudgetBurn", severity="warning", team="sre",
                                     tier="standard", slo="availability", long_window="1d", short_window="2h")
    # a latency page does not hide the availability ticket of the same tier, nor a tier's error spike
    latency_critical = _alert(alertname="ClaryErrorBudgetBurn", severity="critical", team="sre", tier="standard",
                              slo="latency", long_window="1h", short_window="5m")
    spike_latency_tier = _alert(alertname="ClaryHttpErrorSpike", severity="warning", team="sre", tier="standard")
    spike_same_tier = _alert(alertname="ClaryHttpErrorSpike", severity="warning", team="sre", tier="lite")
    spike_other_tier = _alert(alertname="ClaryHttpErrorSpike", severity="warning", team="sre", tier="professional")
    model_down = _alert(alertname="ClaryModelUnavailable", severity="critical", team="ml", model="ocr-fast")
    model_ratio = _alert(alertname="ClaryInferenceFailureRatioHigh", severity="warning", team="ml", model="ocr-fast")
    other_model_ratio = _alert(alertname="ClaryInferenceFailureRatioHigh", severity="warning", team="ml",
                               model="layout-base")
    # every replica down covers each replica's warning; one replica's warning stays alone otherwise
    all_down = _alert(alertname="ClaryExporterDown", severity="critical", team="sre", job="clary-exporter")
    replica_down = _alert(alertname="ClaryExporterDown", severity="warning", team="sre", job="clary-exporter",
                          instance="10.0.0.7:25279")
    service_down = _alert(alertname="ClaryServiceDown", severity="warning", team="sre", job="clary-services",
                          instance="10.0.0.9:8000")
    expiring = _alert(alertname="ClaryLicenseExpiring", severity="warning", team="licensing", tier="standard",
                      license="0f0f0f0f0f0f")
    license_errors = _alert(alertname="ClaryLicenseValidationErrors", severity="critical", team="sre", tier="standard")
    urgent = _alert(alertname="ClaryUrgentBugReport", severity="warning", team="support", tier="professional")
    watchdog = _alert(alertname="Watchdog", severity="info", team="sre")
    sent = [burn_critical, burn_warning, burn_warning_other_tier, latency_critical, spike_latency_tier,
            spike_same_tier, spike_other_tier, model_down, model_ratio, other_model_ratio, all_down, replica_down,
            service_down, expiring, license_errors, urgent, watchdog]
    assert _http("POST", f"{url}/api/v2/alerts", sent)[0] == 200

    suppressed = [burn_warning, spike_same_tier, model_ratio, replica_down]
    active = [a for a in sent if a not in suppressed]

    def settled(by_key) -> bool:
        return len(by_key) == len(sent) and all(
            by_key[_key(a["labels"])]["status"]["state"] == "suppressed" for a in suppressed
        )

    got = _wait_for(url, settled)
    assert len(got) == len(sent), sorted(got)
    state = {a["labels"]["alertname"] + "/" + "/".join(sorted(a["labels"].values())): got[_key(a["labels"])]["status"]
             for a in sent}
    for alert in suppressed:
        status = got[_key(alert["labels"])]["status"]
        assert status["state"] == "suppressed" and status["inhibitedBy"], (alert["labels"], state)
    for alert in active:
        status = got[_key(alert["labels"])]["status"]
        assert status["state"] == "active" and not status["inhibitedBy"], (alert["labels"], state)

    fingerprint = {k: a["fingerprint"] for k, a in got.items()}
    assert got[_key(burn_warning["labels"])]["status"]["inhibitedBy"] == [fingerprint[_key(burn_critical["labels"])]]
    assert got[_key(spike_same_tier["labels"])]["status"]["inhibitedBy"] == [fingerprint[_key(burn_critical["labels"])]]
    assert got[_key(model_ratio["labels"])]["status"]["inhibitedBy"] == [fingerprint[_key(model_down["labels"])]]
    assert got[_key(replica_down["labels"])]["status"]["inhibitedBy"] == [fingerprint[_key(all_down["labels"])]]

    def receivers(alert) -> list[str]:
        return [r["name"] for r in got[_key(alert["labels"])]["receivers"]]

    assert receivers(burn_critical) == PAGER
    assert receivers(burn_warning_other_tier) == TICKET
    assert receivers(urgent) == SUPPORT_AND_DEV
    assert receivers(watchdog) == DEADMAN
    assert receivers(expiring) == LICENSING
    assert receivers(license_errors) == PAGER
    assert receivers(all_down) == PAGER
    assert receivers(service_down) == TICKET
