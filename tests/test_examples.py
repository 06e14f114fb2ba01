"""The examples/ services, each run as a subprocess on a free loopback port: requests in, metric values out."""

from __future__ import annotations

import json
import sys
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import support

pytestmark = pytest.mark.e2e

SECRET = "examples-test-secret-0123456789"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def request(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={**({"Content-Type": "application/json"} if data else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def samples(base: str) -> dict[tuple[str, frozenset], float]:
    status, body = request(f"{base}/metrics")
    assert status == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(found: dict, name: str, **labels) -> float | None:
    return found.get((name, frozenset(labels.items())))


@pytest.fixture(params=["aiohttp_service", "fastapi_service"])
def service(request, tmp_path):
    port = support.free_port()
    cmd = [sys.executable, str(support.ROOT / "examples" / f"{request.param}.py"), "--port", str(port)]
    base = f"http://{support.LOOPBACK}:{port}"
    with support.running(cmd, f"{base}/healthz", timeout=30, env={"CLARY_HMAC_SECRET": SECRET},
                         log_path=tmp_path / "service.log"):
        yield base, tmp_path / "service.log"


def test_example_service_reports_its_traffic(service):
    base, log_path = service
    pro = {"X-API-Key": "example-pro-key"}
    lite = {"X-API-Key": "example-lite-key"}
    for doc in ("a-1", "b-2", "c-3"):
        status, body = request(f"{base}/api/v1/documents/{doc}", headers=pro)
        assert status == 200 and json.loads(body) == {"id": doc, "tier": "professional"}
    assert request(f"{base}/api/v1/documents/x", headers={"X-API-Key": "nope"})[0] == 200
    for features in (["ocr"], ["ocr", "table_extraction"]):
        status, _ = request(f"{base}/api/v1/documents", "POST", {"doc_type": "pdf", "features": features}, lite)
        assert status == 201
    assert request(f"{base}/api/v1/features/sso", "POST", headers=lite)[0] == 403
    status, body = request(f"{base}/api/v1/broken", headers={**pro, "traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"})
    assert status == 500
    error_id = json.loads(body)["error_id"]
    assert uuid.UUID(error_id).version == 4
    assert request(f"{base}/no/such/path")[0] == 404

    found = samples(base)
    http = "clary_http_requests_total"
    assert value(found, http, tier="professional", method="GET", route="/api/v1/documents/{doc_id}", code="200") == 3
    assert value(found, http, tier="unknown", method="GET", route="/api/v1/documents/{doc_id}", code="200") == 1
    assert value(found, http, tier="lite", method="POST", route="/api/v1/documents", code="201") == 2
    assert value(found, http, tier="lite", method="POST", route="/api/v1/features/{feature}", code="403") == 1
    assert value(found, http, tier="professional", method="GET", route="/api/v1/broken", code="500") == 1
    assert value(found, http, tier="unknown", method="GET", route="unmatched", code="404") == 1
    assert not [k for k in found if k[0] == http and dict(k[1]).get("route") in ("/metrics", "/healthz")]
    assert value(found, "clary_errors_total", tier="professional", error_type="RuntimeError",
                 route="/api/v1/broken") == 1
    assert value(found, "clary_documents_processed_total", tier="lite", doc_type="pdf", outcome="success") == 2
    assert value(found, "clary_feature_uses_total", tier="lite", feature="ocr", outcome="success") == 2
    assert value(found, "clary_feature_uses_total", tier="lite", feature="table_extraction", outcome="success") == 1
    assert value(found, "clary_features_per_document_count", tier="lite") == 2
    assert value(found, "clary_inference_requests_total", tier="lite", model="layout-base", outcome="success") == 2
    assert value(found, "clary_feature_blocked_total", tier="lite", feature="sso") == 1
    assert value(found, "clary_active_users", tier="professional", window="5m") == 1
    assert value(found, "clary_active_users", tier="lite", window="5m") == 1
    assert value(found, "clary_http_requests_in_flight") == 0
    duration = value(found, "clary_http_request_duration_seconds_count",
                     tier="professional", method="GET", route="/api/v1/documents/{doc_id}")
    assert duration == 3

    # The trace id of the failing request is an exemplar in the OpenMetrics exposition.
    status, body = request(f"{base}/metrics", headers={"Accept": OPENMETRICS})
    assert status == 200
    exemplars = [line for line in body.decode().splitlines() if f'trace_id="{TRACE_ID}"' in line]
    assert len(exemplars) == 1 and 'route="/api/v1/broken"' in exemplars[0]

    # One structured log record with the same error id; no key or user id in it.
    log = log_path.read_text()
    assert log.count(error_id) == 1 and "something broke" in log
    for secret in ("example-pro-key", "user-pro-1", "example-lite-key"):
        assert secret not in log
    text = request(f"{base}/metrics")[1].decode()
    for secret in ("example-pro-key", "user-pro-1", "a-1", "b-2"):
        assert secret not in text


def test_example_refuses_to_start_without_a_secret(tmp_path):
    import subprocess

    for name in ("aiohttp_service", "fastapi_service"):
        env = {k: v for k, v in __import__("os").environ.items() if k != "CLARY_HMAC_SECRET"}
        proc = subprocess.run([sys.executable, str(support.ROOT / "examples" / f"{name}.py"), "--port", "0"],
                              capture_output=True, text=True, timeout=30, env=env, cwd=support.ROOT)
        assert proc.returncode == 2
        assert "CLARY_HMAC_SECRET" in proc.stderr
