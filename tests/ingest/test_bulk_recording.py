"""Bulk recording of accepted events: ``record_all`` per event type equals ``apply`` per event.

``exporter.ingest.backlog`` records accepted events in bulk per type
(``record_all``, through a recorder batch) instead of ``apply`` per event on
arrival. Checked against ``apply`` one event at a time: same samples, same
per-user activity, also where raw values fold into ``other`` and durations
sit on bucket bounds.
"""

from __future__ import annotations

from collections import Counter

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.catalog import spec
from exporter.ingest.backlog import record_events
from exporter.ingest.decode import EventBatch
from exporter.ingest.schemas import EVENT_MODELS, Event, LicenseStatus, Session, UserAction
from exporter.instrument.recorder import Recorder
from tests.api.schema_strategies import from_schema
from tests.api_helpers import value
from tests.recording_helpers import (HASHER, OPTED_OUT_USER, REFUSED_USER, Users, assert_same_samples, new_recorder,
                                     samples)

PROPERTY = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


# --- valid events from the OpenAPI components, with small value pools ----------------------------------

COMPONENTS = msgspec.json.schema_components((EventBatch,), ref_template="#/components/schemas/{name}")[1]

# Every bucket bound of the families events observe, so that durations often land exactly on one.
BOUNDS = sorted({float(b) for s in (
    "clary_http_request_duration_seconds", "clary_document_processing_duration_seconds",
    "clary_inference_duration_seconds", "clary_model_load_duration_seconds", "clary_llm_request_duration_seconds",
    "clary_llm_time_to_first_token_seconds", "clary_license_validation_duration_seconds",
    "clary_session_duration_seconds") for b in spec(s).buckets})
SECONDS = st.one_of(st.sampled_from([0.0, *BOUNDS]), st.sampled_from([0.003, 0.3, 7.0, 99.0, 604800.0]),
                    st.floats(0, 5000, allow_nan=False))
LIMIT_NAMES = st.sampled_from(["documents", "api_calls", "seats", "gpus"])  # seats, gpus: off-list -> other
GAUGES = st.sampled_from([0.0, 1.0, 17.0, 420.0, 2.5e9])

# Field -> strategy; off-list values (folding into "other") are in every pool of an allow-listed label.
POOLS = {
    "doc_type": st.sampled_from(["pdf", "docx", "scan", "fax"]),
    "feature": st.sampled_from(["ocr", "sso", "teleport", "x-ray"]),
    "features": st.lists(st.sampled_from(["ocr", "redaction", "teleport", "x-ray"]), max_size=4),
    "limit": LIMIT_NAMES,
    "model": st.sampled_from(["ocr-fast", "gpt-4o", "mystery-1", "mystery-2"]),
    "provider": st.sampled_from(["openai", "anthropic", "acme", "zeta"]),
    "queue": st.sampled_from(["ocr", "llm", "q1", "q2"]),
    "action": st.sampled_from(["login", "upload", "dance", "sing"]),
    "route": st.sampled_from(["/a", "/b/{id}"]),
    "code": st.sampled_from([200, 404, 503]),
    "user_id": st.sampled_from(["u1", "u2", "u3", OPTED_OUT_USER, REFUSED_USER]),
    # One id per event: bulk recording ends a fold's sessions after its actions, which equals apply in
    # order only while an id is not reused after its session's end (the documented contract, docs/api.md).
    "session_id": st.uuids().map(str),
    "license_key": st.sampled_from(["L1", "L2", "L3"]),
    "usage": st.dictionaries(LIMIT_NAMES, GAUGES, max_size=4),
    "limits": st.dictionaries(LIMIT_NAMES, GAUGES, max_size=4),
    "expires_at": st.sampled_from([1e9, 1.5e9, 1893456000.0]),
    "memory_bytes": GAUGES,
    "length": GAUGES,
    "duration_seconds": SECONDS,
    "time_to_first_token_seconds": SECONDS,
    "input_tokens": st.sampled_from([0, 1, 1200, 10**12]),
    "output_tokens": st.sampled_from([0, 7, 300]),
}


def _nullable(schema: dict) -> bool:
    return any(option.get("type") == "null" for option in schema.get("anyOf", ()))


def event_dicts(model) -> st.SearchStrategy[dict]:
    """Valid event dicts of one type: the OpenAPI translator (tests/api/schema_strategies.py), pooled fields overridden."""
    schema = COMPONENTS[model.__name__]
    fixed, optional = {}, {}
    for name, prop in schema["properties"].items():
        if name == "id":
            continue
        strategy = POOLS.get(name)
        if strategy is None:
            strategy = from_schema(prop, COMPONENTS, fuzz=False)
        elif _nullable(prop):
            strategy = st.one_of(st.none(), strategy, strategy)
        (fixed if name in schema.get("required", ()) else optional)[name] = strategy
    return st.fixed_dictionaries(fixed, optional=optional)


def events_of(model, max_size: int = 25) -> st.SearchStrategy[list]:
    return st.lists(event_dicts(model), min_size=1, max_size=max_size).map(
        lambda dicts: [msgspec.convert(d, Event) for d in dicts])


MIXED = st.lists(st.one_of([event_dicts(m) for m in EVENT_MODELS]), min_size=1, max_size=40).map(
    lambda dicts: [msgspec.convert(d, Event) for d in dicts])


def by_type(events: list) -> dict[type, list]:
    grouped: dict[type, list] = {}
    for event in events:
        grouped.setdefault(type(event), []).append(event)
    return grouped


def apply_each(events: list) -> tuple[CollectorRegistry, Recorder, Users]:
    """The reference: ``apply`` one event at a time on a fresh recorder."""
    registry, rec = new_recorder()
    users = Users()
    for event in events:
        event.apply(rec, users)
    return registry, rec, users


# --- record_all == apply ---------------------------------------------------------------------

@pytest.mark.parametrize("model", EVENT_MODELS, ids=lambda m: m.type)
@PROPERTY
@given(data=st.data())
def test_bulk_recording_equals_apply_per_event(model, data):
    """record_all (on a batch) + commit == apply on each event, in order.

    Pools are small so events share series, off-list values fold into
    ``other`` and durations often sit on bucket bounds: counts and buckets
    exactly equal, sums up to rounding; the users tracker gets the same
    totals and the active users/licenses are the same.
    """
    events = data.draw(events_of(model))
    want_registry, _, want_users = apply_each(events)

    registry, rec = new_recorder()
    users = Users()
    batch = rec.batch()
    model.record_all(events, batch, users)
    batch.commit()

    assert_same_samples(samples(registry), samples(want_registry))
    assert users.tracked == want_users.tracked
    assert users.refused == want_users.refused
    assert model in (UserAction, Session) or not users.calls, "only events with a user id touch per-user state"


@PROPERTY
@given(events=MIXED)
def test_mixed_types_through_record_events_equal_apply(events):
    """A mixed batch recorded by ``record_events`` (grouped per type) == apply + one accepted count per event."""
    want_registry, want_rec, want_users = apply_each(events)
    for event_type, count in Counter(e.type for e in events).items():
        want_rec.event(event_type, "accepted", count)

    registry, rec = new_recorder()
    users = Users()
    record_events(events, rec, users)

    assert_same_samples(samples(registry), samples(want_registry))
    assert users.tracked == want_users.tracked and users.refused == want_users.refused


def test_bulk_recording_spot_check_by_hand():
    """Hand-computed samples for a few documents and LLM calls recorded in bulk (not only "same as apply")."""
    events = [msgspec.convert(d, Event) for d in [
        {"type": "document_processed", "tier": "lite", "doc_type": "pdf", "duration_seconds": 0.5,
         "features": ["ocr", "ocr", "sso"]},
        {"type": "document_processed", "tier": "lite", "doc_type": "scan", "duration_seconds": 1.0},
        {"type": "document_processed", "tier": "lite", "doc_type": "fax", "outcome": "failure",
         "features": ["teleport"]},
        {"type": "llm_call", "tier": "professional", "provider": "acme", "model": "gpt-4o",
         "duration_seconds": 2.5, "input_tokens": 100, "output_tokens": 0},
        {"type": "llm_call", "tier": "professional", "provider": "zeta", "model": "gpt-4o",
         "duration_seconds": 0.3, "time_to_first_token_seconds": 0.1, "input_tokens": 20, "output_tokens": 5},
    ]]
    registry, rec = new_recorder()
    record_events(events, rec, Users())
    docs = "clary_documents_processed_total"
    assert value(registry, docs, tier="lite", doc_type="pdf", outcome="success") == 1
    assert value(registry, docs, tier="lite", doc_type="other", outcome="success") == 1
    assert value(registry, docs, tier="lite", doc_type="other", outcome="failure") == 1
    duration = "clary_document_processing_duration_seconds"
    assert value(registry, f"{duration}_bucket", tier="lite", doc_type="pdf", le="0.5") == 1
    assert value(registry, f"{duration}_bucket", tier="lite", doc_type="pdf", le="0.25") == 0
    assert value(registry, f"{duration}_bucket", tier="lite", doc_type="other", le="1.0") == 1
    assert value(registry, f"{duration}_bucket", tier="lite", doc_type="other", le="0.5") == 0
    assert value(registry, f"{duration}_count", tier="lite", doc_type="other") == 1  # the fax had no duration
    per_doc = "clary_features_per_document"
    assert value(registry, f"{per_doc}_count", tier="lite") == 2  # documents without features not observed
    assert value(registry, f"{per_doc}_sum", tier="lite") == 4
    assert value(registry, f"{per_doc}_bucket", tier="lite", le="1.0") == 1
    assert value(registry, f"{per_doc}_bucket", tier="lite", le="2.0") == 1
    assert value(registry, f"{per_doc}_bucket", tier="lite", le="3.0") == 2
    uses = "clary_feature_uses_total"
    assert value(registry, uses, tier="lite", feature="ocr", outcome="success") == 2
    assert value(registry, uses, tier="lite", feature="sso", outcome="success") == 1
    assert value(registry, uses, tier="lite", feature="other", outcome="failure") == 1
    tokens = "clary_llm_tokens_total"
    assert value(registry, tokens, tier="professional", provider="other", model="gpt-4o", direction="input") == 120
    assert value(registry, tokens, tier="professional", provider="other", model="gpt-4o", direction="output") == 5
    ttft = "clary_llm_time_to_first_token_seconds"
    assert value(registry, f"{ttft}_count", provider="other", model="gpt-4o") == 1
    assert value(registry, f"{ttft}_bucket", provider="other", model="gpt-4o", le="0.1") == 1
    assert value(registry, f"{ttft}_bucket", provider="other", model="gpt-4o", le="0.05") == 0
    llm = "clary_llm_request_duration_seconds"
    assert value(registry, f"{llm}_bucket", provider="other", model="gpt-4o", le="0.5") == 1
    assert value(registry, f"{llm}_bucket", provider="other", model="gpt-4o", le="2.5") == 2
    assert value(registry, f"{llm}_sum", provider="other", model="gpt-4o") == pytest.approx(2.8)
    events_total = "clary_exporter_events_total"
    assert value(registry, events_total, type="document_processed", outcome="accepted") == 3
    assert value(registry, events_total, type="llm_call", outcome="accepted") == 2


def test_gauges_folding_into_other_keep_the_last_value_in_bulk():
    """Off-list queues/models/limit names fold into ``other``: the last value of the batch wins, as with apply."""
    events = [msgspec.convert(d, Event) for d in [
        {"type": "queue_length", "queue": "q1", "length": 1},
        {"type": "queue_length", "queue": "q2", "length": 2},
        {"type": "queue_length", "queue": "q1", "length": 3},
        {"type": "model_load", "model": "m1", "duration_seconds": 1, "memory_bytes": 10},
        {"type": "model_load", "model": "m2", "duration_seconds": 1, "memory_bytes": 20},
        {"type": "model_load", "model": "m1", "duration_seconds": 1},
        {"type": "license_status", "tier": "lite", "license_key": "L1", "usage": {"seats": 1, "gpus": 2}},
        {"type": "license_status", "tier": "lite", "license_key": "L1", "usage": {"seats": 3}},
    ]]
    want_registry, _, _ = apply_each(events)
    registry, rec = new_recorder()
    batch = rec.batch()
    for event_type, group in by_type(events).items():
        event_type.record_all(group, batch, Users())
    batch.commit()
    assert value(registry, "clary_queue_length", queue="other") == 3
    assert value(registry, "clary_model_memory_bytes", model="other") == 20
    assert sum(v for (name, labels), v in samples(registry).items()
               if name == "clary_license_usage" and ("limit", "other") in labels) == 3
    assert_same_samples(samples(registry), samples(want_registry))


def license_status_both_ways(events: list, licenses_before: int) -> tuple[CollectorRegistry, CollectorRegistry, Recorder]:
    """``apply`` one by one, and ``record_all`` in bulk, each on a recorder already holding ``licenses_before``."""
    def filled() -> tuple[CollectorRegistry, Recorder]:
        registry, rec = new_recorder()
        for i in range(licenses_before):
            rec.license_status("lite", f"fill-{i}", expires_at=1.0)
        return registry, rec

    want_registry, want_rec = filled()
    for event in events:
        event.apply(want_rec, Users())
    registry, rec = filled()
    batch = rec.batch()
    LicenseStatus.record_all(events, batch, Users())
    batch.commit()
    return want_registry, registry, rec


def test_license_status_bulk_equals_apply_when_license_ids_fold_into_other():
    """Past the license gauges' series budget license ids fold into ``other``: the last event must still win."""
    budget = spec("clary_license_expiry_timestamp_seconds").budget
    events = [msgspec.convert(d, Event) for d in [
        {"type": "license_status", "tier": "lite", "license_key": "L1", "expires_at": 1e9},
        {"type": "license_status", "tier": "lite", "license_key": "L2", "expires_at": 2e9},
        {"type": "license_status", "tier": "lite", "license_key": "L1", "expires_at": 3e9},
    ]]
    want_registry, registry, _ = license_status_both_ways(events, budget)
    other = {"license": "other", "tier": "lite"}
    assert want_registry.get_sample_value("clary_license_expiry_timestamp_seconds", other) == 3e9
    assert registry.get_sample_value("clary_license_expiry_timestamp_seconds", other) == 3e9


def test_license_status_repeats_collapse_but_licenses_are_admitted_in_arrival_order():
    """Room for one more license: L1 came first, so L1 gets its own series and L2 folds, though L1 repeats last.

    The repeated L1 event is skipped as overridden by its last one; the
    samples still equal applying every event in order. (Room: the series
    kept as they are, the budget less the reserve for folded series.)
    """
    budget = new_recorder()[1].metrics.guard.exact_limit(spec("clary_license_expiry_timestamp_seconds"))
    events = [msgspec.convert(d, Event) for d in [
        {"type": "license_status", "tier": "lite", "license_key": "L1", "expires_at": 1e9, "usage": {"seats": 1}},
        {"type": "license_status", "tier": "lite", "license_key": "L2", "expires_at": 2e9, "usage": {"seats": 2}},
        {"type": "license_status", "tier": "lite", "license_key": "L1", "expires_at": 3e9, "usage": {"seats": 3}},
        {"type": "license_status", "tier": "lite", "license_key": "L3", "expires_at": 4e9},
    ]]
    want_registry, registry, rec = license_status_both_ways(events, budget - 1)
    assert_same_samples(samples(registry), samples(want_registry))
    expiry = {labels: v for (name, labels), v in samples(registry).items()
              if name == "clary_license_expiry_timestamp_seconds"}
    assert expiry[(("license", HASHER.license_id("L1")), ("tier", "lite"))] == 3e9
    assert expiry[(("license", "other"), ("tier", "lite"))] == 4e9
