"""The demo API inside the real exporter app, and demo traffic over loopback."""

from __future__ import annotations

import asyncio
import inspect
import random
import uuid

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter import demo
from exporter.catalog import CATALOG, TIERS, Kind
from exporter.config import Config
from exporter.demo.credentials import DEMO_FUNNELS
from exporter.demo.api import DAY, LICENSES, PLANS, REVOKED_LICENSE, DemoApi
from exporter.demo.traffic import DemoTraffic
from exporter.demo.workflows import HAPPY_PATH
from exporter.demo import DEMO_SECRET
from exporter.instrument.hashing import Hasher

BASE = "/demo/api/v1"
KEY = {tier: {"X-API-Key": f"demo-{tier}-key"} for tier in TIERS}


class NoFailRng(random.Random):
    """Every simulated failure roll (``random() < rate``) misses; durations stay deterministic."""

    def random(self) -> float:
        return 0.5


def demo_api(app) -> DemoApi:
    """The DemoApi instance behind the mounted demo sub-application."""
    for resource in app.router.resources():
        sub = resource.get_info().get("app")
        if sub is None:
            continue
        for route in sub.router.routes():
            owner = getattr(inspect.unwrap(route.handler), "__self__", None)  # instrument() wraps it
            if isinstance(owner, DemoApi):
                return owner
    raise AssertionError("demo API not mounted")


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def app(registry, tmp_path):
    return demo.create_app(Config(demo=True, collectors={"system": False, "gpu": False}, data_dir=tmp_path), registry)


@pytest.fixture
async def client(aiohttp_client, app):
    demo_api(app).rng = NoFailRng(3)
    return await aiohttp_client(app)


def value(registry, name, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def requests(registry, tier, method, route, code) -> float:
    return value(registry, "clary_http_requests_total", tier=tier, method=method, route=BASE + route, code=str(code))


@pytest.mark.parametrize("tier", TIERS)
async def test_every_route_with_every_key(client, registry, tier):
    own_license = next(k for k, (t, _) in LICENSES.items() if t == tier)
    calls = [
        ("POST", "/documents", {"doc_type": "pdf", "features": ["ocr"]}, "/documents", 201),
        ("GET", "/documents/doc-17", None, "/documents/{id}", 200),
        ("GET", "/documents/missing-17", None, "/documents/{id}", 404),
        ("POST", "/inference", {"model": "ocr-fast"}, "/inference", 200),
        ("POST", "/llm", {"provider": "openai", "model": "gpt-4o"}, "/llm", 200 if tier == "professional" else 403),
        ("POST", "/licenses/validate", {"license": own_license}, "/licenses/validate", 200),
        ("POST", "/feedback", {"type": "general", "rating": 5}, "/feedback", 201),
        ("POST", "/sessions", {"user": "u-1", "duration": 120}, "/sessions", 201),
        ("POST", "/actions", {"user": "u-1", "action": "upload"}, "/actions", 201),
        ("GET", "/boom", None, "/boom", 500),
    ]
    for method, path, body, route, status in calls:
        resp = await client.request(method, BASE + path, json=body, headers=KEY[tier])
        assert resp.status == status, (path, await resp.text())
        assert resp.content_type == "application/json"
        assert requests(registry, tier, method, route, status) == 1, path
    total = sum(s.value for f in registry.collect() for s in f.samples if s.name == "clary_http_requests_total")
    assert total == len(calls)
    assert value(registry, "clary_documents_processed_total", tier=tier, doc_type="pdf", outcome="success") == 1
    assert value(registry, "clary_inference_requests_total", tier=tier, model="ocr-fast", outcome="success") == 1
    assert value(registry, "clary_license_validations_total", tier=tier, result="valid") == 1
    assert value(registry, "clary_feedback_submissions_total", tier=tier, type="general") == 1
    assert value(registry, "clary_session_duration_seconds_count", tier=tier) == 1
    assert value(registry, "clary_user_actions_total", tier=tier, action="login") == 1
    assert value(registry, "clary_user_actions_total", tier=tier, action="upload") == 1
    assert value(registry, "clary_errors_total", tier=tier, error_type="RuntimeError", route=BASE + "/boom") == 1
    assert value(registry, "clary_active_users", tier=tier, window="5m") == 2  # the key's user and "u-1"
    assert value(registry, "clary_licenses_active", tier=tier) == 1


async def test_document_success(client, registry):
    resp = await client.post(f"{BASE}/documents", headers=KEY["standard"],
                             json={"doc_type": "xlsx", "features": ["ocr", "table_extraction"], "template": "builtin"})
    assert resp.status == 201
    assert (await resp.json())["features"] == ["ocr", "table_extraction"]
    assert value(registry, "clary_documents_processed_total", tier="standard", doc_type="xlsx", outcome="success") == 1
    assert value(registry, "clary_document_processing_duration_seconds_count", tier="standard", doc_type="xlsx") == 1
    assert value(registry, "clary_features_per_document_sum", tier="standard") == 2
    assert value(registry, "clary_feature_uses_total", tier="standard", feature="table_extraction", outcome="success") == 1
    assert value(registry, "clary_template_uses_total", tier="standard", kind="builtin") == 1
    assert sum(value(registry, "clary_feature_blocked_total", tier="standard", feature=f)
               for f in PLANS["professional"].features) == 0


async def test_unknown_doc_type_counts_as_other(client, registry):
    resp = await client.post(f"{BASE}/documents", headers=KEY["lite"], json={"doc_type": "fax"})
    assert resp.status == 201
    assert value(registry, "clary_documents_processed_total", tier="lite", doc_type="other", outcome="success") == 1
    assert value(registry, "clary_features_per_document_count", tier="lite") == 0


async def test_blocked_feature_and_custom_template_for_lite(client, registry):
    resp = await client.post(f"{BASE}/documents", headers=KEY["lite"],
                             json={"doc_type": "docx", "features": ["ocr", "translation", "sso"], "template": "custom"})
    assert resp.status == 201
    assert (await resp.json())["features"] == ["ocr"]
    assert value(registry, "clary_feature_blocked_total", tier="lite", feature="translation") == 1
    assert value(registry, "clary_feature_blocked_total", tier="lite", feature="sso") == 1
    assert value(registry, "clary_feature_blocked_total", tier="lite", feature="custom_templates") == 1
    assert value(registry, "clary_template_uses_total", tier="lite", kind="custom") == 0
    assert value(registry, "clary_feature_uses_total", tier="lite", feature="ocr", outcome="success") == 1
    assert value(registry, "clary_feature_uses_total", tier="lite", feature="translation", outcome="success") == 0


async def test_features_per_document_quota(client, registry):
    plan = PLANS["standard"]
    wanted = list(plan.features[: plan.features_per_document + 1])
    resp = await client.post(f"{BASE}/documents", headers=KEY["standard"], json={"doc_type": "pdf", "features": wanted})
    assert resp.status == 201
    assert (await resp.json())["features"] == wanted[: plan.features_per_document]
    assert value(registry, "clary_quota_exceeded_total", tier="standard", limit="features") == 1
    assert value(registry, "clary_features_per_document_sum", tier="standard") == plan.features_per_document


async def test_documents_per_minute_quota(client, registry):
    allowed = PLANS["lite"].documents_per_minute
    statuses = []
    # Two minutes' worth at most: even across a minute boundary the quota trips.
    for _ in range(2 * allowed + 5):
        resp = await client.post(f"{BASE}/documents", headers=KEY["lite"], json={"doc_type": "text"})
        statuses.append(resp.status)
        if resp.status == 429:
            assert await resp.json() == {"error": "quota_exceeded", "limit": "documents"}
            break
    assert statuses[-1] == 429 and statuses.count(429) == 1
    assert value(registry, "clary_quota_exceeded_total", tier="lite", limit="documents") == 1
    assert requests(registry, "lite", "POST", "/documents", 429) == 1
    processed = sum(value(registry, "clary_documents_processed_total", tier="lite", doc_type="text", outcome=o)
                    for o in ("success", "failure"))
    assert processed == len(statuses) - 1
    # Failures follow the demo's deterministic schedule: the 2nd, 32nd, ... text document.
    assert statuses.count(422) == value(registry, "clary_documents_processed_total", tier="lite", doc_type="text",
                                        outcome="failure") == len(range(2, len(statuses), 30))


async def test_llm_blocked_for_lite(client, registry):
    resp = await client.post(f"{BASE}/llm", headers=KEY["lite"], json={"provider": "openai", "model": "gpt-4o"})
    assert resp.status == 403
    assert await resp.json() == {"error": "feature_not_in_tier", "feature": "llm_extraction"}
    assert value(registry, "clary_feature_blocked_total", tier="lite", feature="llm_extraction") == 1
    assert value(registry, "clary_llm_requests_total", tier="lite", provider="openai", model="gpt-4o",
                 outcome="success") == 0
    assert requests(registry, "lite", "POST", "/llm", 403) == 1


async def test_llm_for_professional_counts_tokens(client, registry):
    resp = await client.post(f"{BASE}/llm", headers=KEY["professional"],
                             json={"provider": "anthropic", "model": "claude-sonnet"})
    assert resp.status == 200
    output_tokens = (await resp.json())["tokens"]
    labels = {"tier": "professional", "provider": "anthropic", "model": "claude-sonnet"}
    assert value(registry, "clary_llm_requests_total", outcome="success", **labels) == 1
    assert value(registry, "clary_llm_tokens_total", direction="output", **labels) == output_tokens
    assert 200 <= value(registry, "clary_llm_tokens_total", direction="input", **labels) < 6000
    assert value(registry, "clary_llm_time_to_first_token_seconds_count", provider="anthropic",
                 model="claude-sonnet") == 1
    assert value(registry, "clary_llm_request_duration_seconds_count", provider="anthropic", model="claude-sonnet") == 1
    assert value(registry, "clary_feature_uses_total", tier="professional", feature="llm_extraction",
                 outcome="success") == 1


async def test_inference_loads_model_once_and_respects_tier(client, registry):
    statuses = []
    for _ in range(3):
        resp = await client.post(f"{BASE}/inference", headers=KEY["standard"], json={"model": "layout-base"})
        statuses.append(resp.status)
    assert statuses == [200, 502, 200]  # the demo's deterministic failure schedule
    assert value(registry, "clary_inference_requests_total", tier="standard", model="layout-base", outcome="success") == 2
    assert value(registry, "clary_inference_requests_total", tier="standard", model="layout-base", outcome="failure") == 1
    assert value(registry, "clary_model_load_duration_seconds_count", model="layout-base") == 1
    assert value(registry, "clary_model_memory_bytes", model="layout-base") >= 300 * 2**20
    assert registry.get_sample_value("clary_queue_length", {"queue": "inference"}) is not None
    resp = await client.post(f"{BASE}/inference", headers=KEY["lite"], json={"model": "layout-base"})
    assert resp.status == 403 and (await resp.json())["error"] == "model_not_in_tier"
    assert value(registry, "clary_inference_requests_total", tier="lite", model="layout-base", outcome="success") == 0


async def test_licenses_valid_revoked_invalid(client, registry):
    resp = await client.post(f"{BASE}/licenses/validate", headers=KEY["professional"], json={"license": "DEMO-PRO-0002"})
    assert resp.status == 200 and await resp.json() == {"result": "valid"}
    resp = await client.post(f"{BASE}/licenses/validate", headers=KEY["standard"], json={"license": REVOKED_LICENSE})
    assert resp.status == 403 and await resp.json() == {"result": "revoked"}
    resp = await client.post(f"{BASE}/licenses/validate", headers=KEY["standard"], json={"license": "NOPE-1"})
    assert resp.status == 403 and await resp.json() == {"result": "invalid"}
    assert value(registry, "clary_license_validations_total", tier="professional", result="valid") == 1
    assert value(registry, "clary_license_validations_total", tier="standard", result="revoked") == 1
    assert value(registry, "clary_license_validations_total", tier="standard", result="invalid") == 1
    assert value(registry, "clary_license_validation_duration_seconds_count") == 3
    assert value(registry, "clary_licenses_active", tier="standard") == 2
    assert value(registry, "clary_licenses_active", tier="professional") == 1

    license_id = Hasher(DEMO_SECRET).license_id("DEMO-PRO-0002")
    expiry = value(registry, "clary_license_expiry_timestamp_seconds", license=license_id, tier="professional")
    assert expiry == pytest.approx(demo_api_started(client) + LICENSES["DEMO-PRO-0002"][1] * DAY)
    plan = PLANS["professional"]
    assert value(registry, "clary_license_usage", license=license_id, tier="professional", limit="documents") == 7
    assert value(registry, "clary_license_limit", license=license_id, tier="professional",
                 limit="documents") == plan.documents_per_minute * 60
    # Unknown and revoked keys get no per-license series.
    for key in (REVOKED_LICENSE, "NOPE-1"):
        assert Hasher(DEMO_SECRET).license_id(key) not in _exposition(registry)
    assert "DEMO-PRO-0002" not in _exposition(registry)


def demo_api_started(client) -> float:
    return demo_api(client.server.app).started


def _exposition(registry) -> str:
    return generate_latest(registry).decode()


async def test_boom_is_500_with_error_id(client, registry):
    resp = await client.get(f"{BASE}/boom", headers=KEY["standard"])
    assert resp.status == 500
    body = await resp.json()
    assert body["error"] == "internal_error" and uuid.UUID(body["error_id"]).version == 4
    assert value(registry, "clary_errors_total", tier="standard", error_type="RuntimeError", route=BASE + "/boom") == 1
    assert requests(registry, "standard", "GET", "/boom", 500) == 1


async def test_feedback_urgent_bug(client, registry):
    resp = await client.post(f"{BASE}/feedback", headers=KEY["professional"], json={"type": "bug", "rating": 1})
    assert resp.status == 201 and await resp.json() == {"urgent": True}
    resp = await client.post(f"{BASE}/feedback", headers=KEY["professional"], json={"type": "bug", "rating": 3})
    assert resp.status == 201 and await resp.json() == {"urgent": False}
    resp = await client.post(f"{BASE}/feedback", headers=KEY["professional"], json={"type": "survey", "rating": 1})
    assert resp.status == 201 and await resp.json() == {"urgent": False}
    assert value(registry, "clary_feedback_urgent_total", tier="professional") == 1
    assert value(registry, "clary_feedback_submissions_total", tier="professional", type="bug") == 2
    assert value(registry, "clary_feedback_rating_sum", tier="professional", type="bug") == 4


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/feedback", {"type": "bug", "rating": 9}, "rating"),
        ("/feedback", {"type": "rant", "rating": 3}, "type"),
        ("/documents", {"features": ["ocr"]}, "doc_type"),
        ("/documents", {"doc_type": "pdf", "features": "ocr"}, "features"),
        ("/sessions", {"user": "u", "duration": -1}, "duration"),
        ("/licenses/validate", {}, "license"),
        ("/llm", {"provider": "openai"}, "model"),
    ],
)
async def test_bad_body_is_400_naming_the_field(client, registry, path, body, field):
    resp = await client.post(BASE + path, headers=KEY["standard"], json=body)
    assert resp.status == 400
    payload = await resp.json()
    assert payload["error"] == "invalid_field" and payload["field"] == field and payload["reason"]
    assert requests(registry, "standard", "POST", path, 400) == 1
    assert value(registry, "clary_feedback_submissions_total", tier="standard", type="bug") == 0


async def test_malformed_json_and_unknown_key(client, registry):
    resp = await client.post(f"{BASE}/feedback", headers={**KEY["lite"], "Content-Type": "application/json"},
                             data=b"{not json")
    assert resp.status == 400 and await resp.json() == {"error": "malformed_json"}
    resp = await client.post(f"{BASE}/feedback", headers={"X-API-Key": "stolen"}, json={"type": "bug", "rating": 1})
    assert resp.status == 401 and await resp.json() == {"error": "unknown_api_key"}
    assert requests(registry, "unknown", "POST", "/feedback", 401) == 1
    assert value(registry, "clary_feedback_urgent_total", tier="unknown") == 0


# --- demo traffic -------------------------------------------------------------

# Families the demo API never moves: events come from the ingestion API, and
# an overflow needs more series than a family's budget.
NOT_FROM_DEMO = {"clary_exporter_events_total", "clary_exporter_label_overflow_total",
                 # Abuse limits of the feedback API: the demo stays under them.
                 "clary_feedback_notifications_suppressed_total", "clary_feedback_rate_limited_total",
                 # Sessions past workflow_max_sessions (100,000): the demo keeps a few per tier.
                 "clary_workflow_sessions_evicted_total"}
# Every scenario per tier, the unknown key, two rare paths, one whole session per tier.
FIRST_ROUND = len(TIERS) * 10 + 1 + 2 + len(TIERS) * (len(HAPPY_PATH) + 1)


async def test_demo_traffic_fills_every_family(aiohttp_client, app, registry):
    client = await aiohttp_client(app)
    base_url = str(client.make_url(""))
    assert base_url.startswith("http://127.0.0.1:")
    traffic = DemoTraffic(base_url, rate=1000, max_requests=200, rng=random.Random(1))
    stats = await asyncio.wait_for(traffic.run(), 60)

    assert stats.transport_errors == 0
    # max_requests bounds the total, first round included.
    assert stats.sent == 200 >= FIRST_ROUND
    assert sum(stats.by_status.values()) == 200
    assert stats.by_status.get(500, 0) >= len(TIERS)  # /boom once per tier in the first round
    assert stats.by_status.get(401, 0) >= 1  # the unknown-key request
    samples = {}
    for family in registry.collect():
        for s in family.samples:
            samples.setdefault(family.name, []).append(s)
    assert sum(s.value for s in samples["clary_http_requests"] if s.name == "clary_http_requests_total") == 200

    for spec in CATALOG:
        if spec.collected:
            continue
        family = spec.name[: -len("_total")] if spec.kind is Kind.COUNTER else spec.name
        got = samples.get(family, [])
        assert got, f"{spec.name} has no samples"
        if spec.name in NOT_FROM_DEMO:
            continue
        if spec.kind is Kind.COUNTER:
            assert any(s.value > 0 for s in got if s.name == spec.name), f"{spec.name} never moved"
        elif spec.kind is Kind.HISTOGRAM:
            assert any(s.value > 0 for s in got if s.name == f"{spec.name}_count"), f"{spec.name} never observed"
    for tier in TIERS:
        assert value(registry, "clary_active_users", tier=tier, window="5m") > 0
        assert value(registry, "clary_licenses_active", tier=tier) > 0
    assert value(registry, "clary_feedback_urgent_total", tier="standard") >= 1
    assert value(registry, "clary_quota_exceeded_total", tier="standard", limit="features") >= 1
    assert value(registry, "clary_http_requests_in_flight") == 0
    for tier in TIERS:  # every step of every demo funnel reached, each step by no more sessions than the one before
        for funnel, steps in DEMO_FUNNELS.items():
            reached = [value(registry, "clary_funnel_sessions_total", tier=tier, funnel=funnel, step=str(n), action=a)
                       for n, a in enumerate(steps, 1)]
            assert reached[-1] >= 1 and reached == sorted(reached, reverse=True), (tier, funnel, reached)
        assert value(registry, "clary_workflow_transitions_total", tier=tier, from_action="logout", to_action="end") >= 1


def test_demo_traffic_only_goes_to_loopback():
    for url in ("http://10.0.0.1:8080", "https://127.0.0.1:1", "http://example.com"):
        with pytest.raises(ValueError, match="loopback"):
            DemoTraffic(url)
