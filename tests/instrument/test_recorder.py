"""Every recorder entry point moves exactly the samples it should, by the right amount."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter import __version__
from exporter.catalog import TIERS
from exporter.instrument.hashing import Hasher
from exporter.instrument.recorder import Recorder
from tests.instrument.recorder_helpers import (DOC_B, FPD_B, HTTP_B, INF_B, LIC_B, LLM_B, LOAD_B, RATING_B, SECRET,
                                               SESSION_B, TTFT_B, Clock, hist, key, record)


def test_http_request(registry, rec):
    moved = record(registry, lambda: rec.http_request("standard", "post", "/api/v1/documents", 201, 0.3))
    assert moved == {
        key("clary_http_requests_total", tier="standard", method="POST", route="/api/v1/documents", code="201"): 1,
        **hist("clary_http_request_duration_seconds", 0.3, HTTP_B,
               tier="standard", method="POST", route="/api/v1/documents"),
    }


def test_error(registry, rec):
    moved = record(registry, lambda: rec.error("lite", "KeyError", "/x/{id}"))
    assert moved == {key("clary_errors_total", tier="lite", error_type="KeyError", route="/x/{id}"): 1}


def test_document_processed_with_features(registry, rec):
    moved = record(registry, lambda: rec.document_processed(
        "professional", "pdf", "success", 2.0, ["ocr", "table_extraction", "ocr"]))
    assert moved == {
        key("clary_documents_processed_total", tier="professional", doc_type="pdf", outcome="success"): 1,
        **hist("clary_document_processing_duration_seconds", 2.0, DOC_B, tier="professional", doc_type="pdf"),
        **hist("clary_features_per_document", 3, FPD_B, tier="professional"),
        key("clary_feature_uses_total", tier="professional", feature="ocr", outcome="success"): 2,
        key("clary_feature_uses_total", tier="professional", feature="table_extraction", outcome="success"): 1,
    }


def test_document_processed_failure_without_duration_or_features(registry, rec):
    moved = record(registry, lambda: rec.document_processed("lite", "fax", "failure", features=iter(())))
    assert moved == {key("clary_documents_processed_total", tier="lite", doc_type="other", outcome="failure"): 1}


def test_document_features_share_the_document_outcome(registry, rec):
    moved = record(registry, lambda: rec.document_processed("lite", "image", "failure", None, ("ocr",)))
    assert moved[key("clary_feature_uses_total", tier="lite", feature="ocr", outcome="failure")] == 1
    assert moved[key("clary_features_per_document_count", tier="lite")] == 1


def test_feature_blocked_quota_template(registry, rec):
    moved = record(registry, lambda: (
        rec.feature_used("standard", "redaction"),
        rec.feature_used("standard", "redaction", "failure"),
        rec.feature_blocked("lite", "llm_extraction"),
        rec.quota_exceeded("lite", "documents"),
        rec.template_used("professional", "custom"),
    ) and None)
    assert moved == {
        key("clary_feature_uses_total", tier="standard", feature="redaction", outcome="success"): 1,
        key("clary_feature_uses_total", tier="standard", feature="redaction", outcome="failure"): 1,
        key("clary_feature_blocked_total", tier="lite", feature="llm_extraction"): 1,
        key("clary_quota_exceeded_total", tier="lite", limit="documents"): 1,
        key("clary_template_uses_total", tier="professional", kind="custom"): 1,
    }


def test_inference(registry, rec):
    moved = record(registry, lambda: rec.inference("standard", "ocr-fast", "failure", 0.07))
    assert moved == {
        key("clary_inference_requests_total", tier="standard", model="ocr-fast", outcome="failure"): 1,
        **hist("clary_inference_duration_seconds", 0.07, INF_B, tier="standard", model="ocr-fast"),
    }


def test_model_loaded_and_queue_length(registry, rec):
    moved = record(registry, lambda: (
        rec.model_loaded("layout-base", 12.0, 3 * 2**30),
        rec.model_loaded("ocr-fast", 0.7),
        rec.queue_length("ocr", 17),
    ) and None)
    assert moved == {
        **hist("clary_model_load_duration_seconds", 12.0, LOAD_B, model="layout-base"),
        key("clary_model_memory_bytes", model="layout-base"): 3 * 2**30,
        key("clary_model_last_load_duration_seconds", model="layout-base"): 12.0,
        **hist("clary_model_load_duration_seconds", 0.7, LOAD_B, model="ocr-fast"),
        key("clary_model_last_load_duration_seconds", model="ocr-fast"): 0.7,
        key("clary_queue_length", queue="ocr"): 17,
    }
    rec.queue_length("ocr", 4)
    assert registry.get_sample_value("clary_queue_length", {"queue": "ocr"}) == 4


def test_llm_call_tokens_by_direction(registry, rec):
    moved = record(registry, lambda: rec.llm_call(
        "professional", "anthropic", "claude-sonnet", "success", 3.0, 0.4, input_tokens=1200, output_tokens=300))
    labels = dict(provider="anthropic", model="claude-sonnet")
    assert moved == {
        key("clary_llm_requests_total", tier="professional", outcome="success", **labels): 1,
        **hist("clary_llm_request_duration_seconds", 3.0, LLM_B, **labels),
        **hist("clary_llm_time_to_first_token_seconds", 0.4, TTFT_B, **labels),
        key("clary_llm_tokens_total", tier="professional", direction="input", **labels): 1200,
        key("clary_llm_tokens_total", tier="professional", direction="output", **labels): 300,
    }


def test_llm_call_without_ttft_or_tokens(registry, rec):
    moved = record(registry, lambda: rec.llm_call("professional", "openai", "gpt-4o", "failure", 0.3))
    labels = dict(provider="openai", model="gpt-4o")
    assert moved == {
        key("clary_llm_requests_total", tier="professional", outcome="failure", **labels): 1,
        **hist("clary_llm_request_duration_seconds", 0.3, LLM_B, **labels),
    }


def test_license_validation_counts_and_active_licenses(registry):
    clock = Clock()
    rec = Recorder(registry, Hasher(SECRET))
    rec.active_licenses._clock = clock  # private seam: the sketches take no clock from the recorder
    moved = record(registry, lambda: rec.license_validation("standard", "valid", 0.004, license_key="KEY-A"))
    assert moved == {
        key("clary_license_validations_total", tier="standard", result="valid"): 1,
        **hist("clary_license_validation_duration_seconds", 0.004, LIC_B),
    }
    rec.license_validation("standard", "valid", license_key="KEY-A")  # same license: still one
    rec.license_validation("standard", "expired", license_key="KEY-B")
    rec.license_validation("professional", "bogus-result")  # no key: not an active license
    rec.license_validation("Gold", "valid", license_key="KEY-C")
    assert registry.get_sample_value("clary_license_validations_total", {"tier": "standard", "result": "valid"}) == 2
    assert registry.get_sample_value("clary_license_validations_total", {"tier": "standard", "result": "expired"}) == 1
    assert registry.get_sample_value("clary_license_validations_total", {"tier": "professional", "result": "error"}) == 1
    assert registry.get_sample_value("clary_license_validations_total", {"tier": "unknown", "result": "valid"}) == 1
    active = {t: registry.get_sample_value("clary_licenses_active", {"tier": t}) for t in (*TIERS, "unknown")}
    assert active == {"lite": 0, "standard": 2, "professional": 0, "unknown": 1}
    clock.now += 24 * 3600 + 1
    assert registry.get_sample_value("clary_licenses_active", {"tier": "standard"}) == 0


def test_license_status_returns_hmac_id_and_never_exposes_the_key(registry, rec):
    raw_key = "CLARY-PRO-7F3A-99B2-SECRETKEY"

    def act():
        return rec.license_status("professional", raw_key, expires_at=1.8e9,
                                  usage={"documents": 120}, limits={"documents": 1000, "api_calls": 5000})

    moved, license_id = record(registry, act)
    assert re.fullmatch(r"[0-9a-f]{12}", license_id)
    assert license_id == Hasher(SECRET).license_id(raw_key)
    assert moved == {
        key("clary_license_expiry_timestamp_seconds", license=license_id, tier="professional"): 1.8e9,
        key("clary_license_usage", license=license_id, tier="professional", limit="documents"): 120,
        key("clary_license_limit", license=license_id, tier="professional", limit="documents"): 1000,
        key("clary_license_limit", license=license_id, tier="professional", limit="api_calls"): 5000,
    }
    rec.license_validation("professional", "valid", license_key=raw_key)
    rec.user_action("professional", "login", "alice@example.com")
    text = generate_latest(registry).decode()
    assert license_id in text
    for secret in (raw_key, "SECRETKEY", "alice@example.com", "alice", SECRET):
        assert secret not in text


def test_feedback_urgent_only_for_low_rated_bugs(registry, rec):
    cases = [
        ("bug", 1, True), ("bug", 2, True), ("bug", 3, False), ("bug", None, False),
        ("feature_request", 1, False), ("general", 2, False), ("survey", 1, False),
    ]
    for feedback_type, rating, urgent in cases:
        before = registry.get_sample_value("clary_feedback_urgent_total", {"tier": "lite"})
        assert rec.feedback("lite", feedback_type, rating) is urgent
        after = registry.get_sample_value("clary_feedback_urgent_total", {"tier": "lite"})
        assert after - before == (1 if urgent else 0), (feedback_type, rating)
    assert registry.get_sample_value("clary_feedback_submissions_total", {"tier": "lite", "type": "bug"}) == 4
    assert registry.get_sample_value("clary_feedback_rating_count", {"tier": "lite", "type": "bug"}) == 3
    assert registry.get_sample_value("clary_feedback_rating_sum", {"tier": "lite", "type": "bug"}) == 6
    assert registry.get_sample_value("clary_feedback_rating_bucket", {"tier": "lite", "type": "bug", "le": "1.0"}) == 1


def test_feedback_moves_exactly(registry, rec):
    moved = record(registry, lambda: rec.feedback("standard", "bug", 2) and None)
    assert moved == {
        key("clary_feedback_submissions_total", tier="standard", type="bug"): 1,
        **hist("clary_feedback_rating", 2, RATING_B, tier="standard", type="bug"),
        key("clary_feedback_urgent_total", tier="standard"): 1,
    }


def test_user_action_session_and_event(registry, rec):
    moved = record(registry, lambda: (
        rec.user_action("standard", "upload", "u-1"),
        rec.user_action("standard", "teleport"),
        rec.session_ended("standard", 900),
        rec.event("feedback", "rejected"),
    ) and None)
    assert moved == {
        key("clary_user_actions_total", tier="standard", action="upload"): 1,
        key("clary_user_actions_total", tier="standard", action="other"): 1,
        **hist("clary_session_duration_seconds", 900, SESSION_B, tier="standard"),
        key("clary_exporter_events_total", type="feedback", outcome="rejected"): 1,
    }


def test_user_seen_counts_distinct_hashed_users(registry, rec):
    for user in ("u-1", "u-2", "u-1"):
        rec.user_seen("standard", user)
    rec.user_action("lite", "view", "u-9")
    rec.user_seen("Gold", "u-3")
    for window in ("5m", "1h", "24h"):
        assert registry.get_sample_value("clary_active_users", {"tier": "standard", "window": window}) == 2
        assert registry.get_sample_value("clary_active_users", {"tier": "lite", "window": window}) == 1
        assert registry.get_sample_value("clary_active_users", {"tier": "unknown", "window": window}) == 1
        assert registry.get_sample_value("clary_active_users", {"tier": "professional", "window": window}) == 0


def test_prefilled_children_exist_at_zero(registry, rec):
    for tier in TIERS:
        for result in ("valid", "invalid", "expired", "revoked", "error"):
            assert registry.get_sample_value(
                "clary_license_validations_total", {"tier": tier, "result": result}) == 0, (tier, result)
        assert registry.get_sample_value("clary_feedback_urgent_total", {"tier": tier}) == 0
        for limit in ("documents", "features", "api_calls"):
            assert registry.get_sample_value("clary_quota_exceeded_total", {"tier": tier, "limit": limit}) == 0
        assert registry.get_sample_value("clary_features_per_document_count", {"tier": tier}) == 0
    assert registry.get_sample_value(
        "clary_exporter_events_total", {"type": "api_call", "outcome": "rejected"}) == 0
    text = generate_latest(registry).decode()
    assert 'clary_feedback_urgent_total{tier="professional"} 0.0' in text


def test_build_info(registry, rec):
    assert registry.get_sample_value("clary_exporter_build_info", {"version": __version__}) == 1
    build = [s for f in registry.collect() for s in f.samples if s.name == "clary_exporter_build_info"]
    assert len(build) == 1


# --- HTTP fast path -------------------------------------------------------------


def test_http_request_with_trace_id_moves_the_same_samples_and_keeps_the_exemplar(registry, rec):
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    moved = record(registry, lambda: rec.http_request("lite", "GET", "/a/{id}", 200, 0.02, trace))
    assert moved == {
        key("clary_http_requests_total", tier="lite", method="GET", route="/a/{id}", code="200"): 1,
        **hist("clary_http_request_duration_seconds", 0.02, HTTP_B, tier="lite", method="GET", route="/a/{id}"),
    }
    exemplars = {
        s.labels["le"]: s.exemplar
        for f in registry.collect() for s in f.samples
        if s.name == "clary_http_request_duration_seconds_bucket" and s.exemplar
    }
    assert list(exemplars) == ["0.025"]
    assert exemplars["0.025"].labels == {"trace_id": trace} and exemplars["0.025"].value == 0.02


def test_http_request_fast_path_equals_observe_for_every_bucket_edge(registry, rec):
    """The cached bucket increments land exactly where Histogram.observe would put them."""
    reference = CollectorRegistry()
    from prometheus_client import Histogram

    hist_ref = Histogram("ref", "Reference.", buckets=HTTP_B, registry=reference)
    values = [0.0, *HTTP_B, *(b + 1e-9 for b in HTTP_B), 1e6]
    for v in values:
        rec.http_request("standard", "GET", "/edge", 200, v)
        hist_ref.observe(v)
    ours = {s.labels["le"]: s.value for f in registry.collect() for s in f.samples
            if s.name == "clary_http_request_duration_seconds_bucket"}
    ref = {s.labels["le"]: s.value for f in reference.collect() for s in f.samples if s.name == "ref_bucket"}
    assert ours == ref
    assert registry.get_sample_value("clary_http_request_duration_seconds_sum",
                                     {"tier": "standard", "method": "GET", "route": "/edge"}) == pytest.approx(sum(values))
