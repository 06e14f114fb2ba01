"""The generated rules in a real Prometheus: they load, every rule evaluates
without error against a live scrape of catalog metrics (runtime errors such as
many-to-many matching never show in ``promtool check rules``), recording rules
produce series and the Watchdog fires.
"""

from __future__ import annotations

import http.server
import json
import socket
import string
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
import yaml

from alerts import checks

# What each exporter replica exposes. Counters grow by $t, ten per second
# since the replica started: lite answers 10 % of its requests with 5xx,
# standard none (and has no 5xx series at all).
EXPOSITION = string.Template("""\
# TYPE clary_http_requests_total counter
clary_http_requests_total{tier="lite",method="GET",route="/api/v1/documents",code="200"} $t9
clary_http_requests_total{tier="lite",method="POST",route="/api/v1/documents",code="500"} $t
clary_http_requests_total{tier="standard",method="GET",route="/api/v1/documents",code="200"} $t5
# TYPE clary_http_request_duration_seconds histogram
clary_http_request_duration_seconds_bucket{tier="lite",method="GET",route="/api/v1/documents",le="0.1"} $t9
clary_http_request_duration_seconds_bucket{tier="lite",method="GET",route="/api/v1/documents",le="1.0"} $t10
clary_http_request_duration_seconds_bucket{tier="lite",method="GET",route="/api/v1/documents",le="2.5"} $t10
clary_http_request_duration_seconds_bucket{tier="lite",method="GET",route="/api/v1/documents",le="+Inf"} $t10
clary_http_request_duration_seconds_sum{tier="lite",method="GET",route="/api/v1/documents"} $t
clary_http_request_duration_seconds_count{tier="lite",method="GET",route="/api/v1/documents"} $t10
# TYPE clary_license_validations_total counter
clary_license_validations_total{tier="lite",result="valid"} $t5
clary_license_validations_total{tier="lite",result="invalid"} 0
clary_license_validations_total{tier="standard",result="valid"} $t
clary_license_validations_total{tier="standard",result="invalid"} 0
# TYPE clary_license_expiry_timestamp_seconds gauge
clary_license_expiry_timestamp_seconds{license="a1b2c3d4e5f6",tier="professional"} 4102444800
# TYPE clary_license_usage gauge
clary_license_usage{license="a1b2c3d4e5f6",tier="professional",limit="documents"} 120
# TYPE clary_license_limit gauge
clary_license_limit{license="a1b2c3d4e5f6",tier="professional",limit="documents"} 1000
# TYPE clary_inference_requests_total counter
clary_inference_requests_total{tier="lite",model="ocr-fast",outcome="success"} $t5
clary_inference_requests_total{tier="lite",model="ocr-fast",outcome="failure"} 0
# TYPE clary_inference_duration_seconds histogram
clary_inference_duration_seconds_bucket{tier="lite",model="ocr-fast",le="0.1"} $t5
clary_inference_duration_seconds_bucket{tier="lite",model="ocr-fast",le="+Inf"} $t5
clary_inference_duration_seconds_sum{tier="lite",model="ocr-fast"} $t
clary_inference_duration_seconds_count{tier="lite",model="ocr-fast"} $t5
# TYPE clary_feedback_urgent_total counter
clary_feedback_urgent_total{tier="lite"} 0
clary_feedback_urgent_total{tier="standard"} 0
clary_feedback_urgent_total{tier="professional"} 0
# TYPE clary_exporter_collector_up gauge
clary_exporter_collector_up{collector="system"} 1
clary_exporter_collector_up{collector="gpu"} 0
# TYPE clary_exporter_collector_errors_total counter
clary_exporter_collector_errors_total{collector="system"} 0
clary_exporter_collector_errors_total{collector="gpu"} 0
""")
_START = time.monotonic()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server API)
        t = int((time.monotonic() - _START) * 10)
        body = EXPOSITION.substitute(t=t, t5=5 * t, t9=9 * t, t10=10 * t).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep pytest output clean
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def prometheus(tmp_path) -> Iterator[str]:
    binary = checks.binary("prometheus")
    targets = []
    servers = []
    for _ in range(2):  # two exporter replicas
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        targets.append(f"127.0.0.1:{server.server_address[1]}")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                # Half-second rounds: the three scrapes and evaluations waited for below come sooner.
                "global": {"scrape_interval": "500ms", "evaluation_interval": "500ms"},
                "rule_files": [str(p) for p in checks.rule_files()],
                "scrape_configs": [{"job_name": "clary-exporter", "static_configs": [{"targets": targets}]}],
            }
        )
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "prometheus.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Prometheus did not become ready:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for server in servers:
            server.shutdown()
            server.server_close()


def _query(url: str, expr: str) -> list:
    return _get(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))["data"]["result"]


def test_rules_load_and_evaluate_cleanly_in_prometheus(prometheus):
    url = prometheus
    expected_rules = sum(1 for _ in checks.iter_rules())

    def groups() -> list[dict]:
        return _get(f"{url}/api/v1/rules")["data"]["groups"]

    def rules() -> list[dict]:
        return [rule for group in groups() for rule in group["rules"]]

    # wait for three scrapes of both replicas and the evaluations after them
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        scraped = _query(url, 'count_over_time(up{job="clary-exporter"}[1m])')
        evaluated = rules()
        if (
            len(scraped) == 2
            and all(float(s["value"][1]) >= 3 for s in scraped)
            and len(evaluated) == expected_rules
            and not any(r.get("lastEvaluation", "0001").startswith("0001") for r in evaluated)
        ):
            break
        time.sleep(0.1)
    # one more evaluation round of every group on the full data
    seen = {g["name"]: g["lastEvaluation"] for g in groups()}
    deadline = time.monotonic() + 30
    while any(g["lastEvaluation"] == seen[g["name"]] for g in groups()):
        assert time.monotonic() < deadline, "rule groups stopped evaluating"
        time.sleep(0.1)
    evaluated = rules()
    assert len(evaluated) == expected_rules
    unhealthy = {r["name"]: r.get("lastError") for r in evaluated if r["health"] != "ok"}
    assert not unhealthy, unhealthy

    # recording rules produce series, summed over the two replicas
    requests = {s["metric"]["tier"]: float(s["value"][1]) for s in _query(url, "tier:clary_http_requests:rate5m")}
    assert set(requests) == {"lite", "standard"}
    assert requests["lite"] > 0 and requests["standard"] > 0
    ratios = {s["metric"]["tier"]: float(s["value"][1])
              for s in _query(url, "tier:clary_slo_availability_errors_per_event:ratio_rate3d")}
    assert ratios == {"lite": pytest.approx(0.1), "standard": 0.0}  # standard has no 5xx series: 0, not absent
    # the SLOs read the same data: lite's 10 % 5xx is 10x its 1 % budget; its latency histogram
    # (every request within 1 s, the 2.5 s threshold a bucket away) is all good
    burn = {s["metric"]["tier"]: float(s["value"][1]) for s in _query(url, "tier:clary_slo_availability_burn_rate:ratio_rate1h")}
    assert burn == {"lite": pytest.approx(10), "standard": 0.0}
    slow = _query(url, 'tier:clary_slo_latency_errors_per_event:ratio_rate5m{tier="lite"}')
    assert float(slow[0]["value"][1]) == pytest.approx(0, abs=1e-9)
    p95 = _query(url, 'tier:clary_http_request_duration_seconds:p95_rate5m{tier="lite"}')
    assert float(p95[0]["value"][1]) == pytest.approx(0.55)  # rank 9.5 of 10 in (0.1, 1]: 0.1 + 0.9 * 0.5
    assert _query(url, "license_tier_limit:clary_license_usage_per_limit:ratio")[0]["value"][1] == "0.12"

    # the Watchdog fires; the GPU-less replicas raise no collector alert
    firing = {s["metric"]["alertname"] for s in _query(url, 'ALERTS{alertstate="firing"}')}
    assert "Watchdog" in firing
    assert not _query(url, 'ALERTS{alertname="ClaryExporterCollectorFailing"}')
