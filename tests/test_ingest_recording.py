"""The fast ingestion recording path: bulk recording, deferred updates, the backlog, dedupe.

``exporter.ingest.backlog`` records accepted events in bulk per type
(``record_all``, later) instead of ``apply`` per event on arrival;
``exporter.instrument.deferred`` sums counters and histograms in per-thread tables
folded in at scrape time; ``EventBacklog`` queues events until ``fold_at``,
the next collect, a direct gauge set or a change of per-user state (opt-out,
opt-in, deletion, the activity flush); ``DedupeWindow.admit`` checks a whole
batch of ids with set operations. Every shortcut here is checked against
the slow path it replaces: same samples, same per-user activity, same
dedupe decisions, exact totals under threads.
"""

from __future__ import annotations

import json
import math
import sys
import threading
from collections import Counter

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client import values as prometheus_values

import exporter.instrument.deferred
from exporter.instrument import _compat
import exporter.instrument.recorder_core
from exporter.api.app import INGEST as INGEST_KEY
from exporter.catalog import spec
from exporter.instrument.deferred import DeferredUpdates
from exporter.ingest.backlog import record_events
from exporter.ingest.decode import EventBatch
from exporter.ingest.dedupe import DedupeWindow
from exporter.ingest.schemas import EVENT_MODELS, Event, LicenseStatus, Session, UserAction
from exporter.labels import LabelRejected
from exporter.instrument.hashing import Hasher
from exporter.instrument.recorder import Recorder
from exporter.server.app import create_app
from tests.api_helpers import make_config, value
from tests.api.schema_strategies import from_schema

SECRET = "ingest-recording-secret-0123456789"
HASHER = Hasher(SECRET)
OPTED_OUT_USER = "u-opted-out"  # opted out in the recorder (is_opted_out hook)
REFUSED_USER = "u-refused"  # refused by the users tracker (track returns False)

PROPERTY = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


# --- helpers -----------------------------------------------------------------------------------------

def new_recorder(**kwargs) -> tuple[CollectorRegistry, Recorder]:
    registry = CollectorRegistry()
    opted = HASHER.digest(OPTED_OUT_USER)
    kwargs.setdefault("is_opted_out", lambda hashed: hashed == opted)
    return registry, Recorder(registry, HASHER, **kwargs)


def no_deferral_recorder(monkeypatch) -> tuple[CollectorRegistry, Recorder]:
    """A recorder built as in multiprocess mode: batches record counters and histograms directly."""
    with monkeypatch.context() as patch:
        patch.setattr(exporter.instrument.recorder_core, "deferred_available", lambda: False)
        registry, rec = new_recorder()
    assert rec._deferred is None
    return registry, rec


def samples(registry: CollectorRegistry) -> dict[tuple, float]:
    """Every clary_* sample as {(name, sorted labels): value} (``_created`` left out)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect() for s in family.samples
            if s.name.startswith("clary_") and not s.name.endswith("_created")}


def nonzero(found: dict) -> dict:
    return {k: v for k, v in found.items() if v}


def assert_same_samples(got: dict, want: dict) -> None:
    """Same series; counts, buckets and gauges exactly equal, ``_sum`` equal up to float rounding."""
    assert set(got) == set(want), (sorted(set(got) - set(want))[:10], sorted(set(want) - set(got))[:10])
    exact = {k: v for k, v in got.items() if not k[0].endswith("_sum")}
    assert exact == {k: want[k] for k in exact}
    for k, v in got.items():
        if k[0].endswith("_sum"):
            assert v == pytest.approx(want[k], rel=1e-9, abs=1e-9), k


def child_value(rec: Recorder, name: str, *labels) -> float:
    """What the prometheus_client object holds right now (no collect, so no fold)."""
    return rec.metrics.child(name, *labels)._value.get()


class Users:
    """A users tracker (``UserTracking``) that sums what it is told and refuses ``REFUSED_USER``."""

    def __init__(self, refuse: tuple[str, ...] = (REFUSED_USER,)):
        self.refuse = refuse
        self.tracked: Counter = Counter()
        self.refused: Counter = Counter()
        self.calls = 0

    def track(self, tier: str, user_id: str, kind: str, count: int = 1) -> bool:
        self.calls += 1
        if user_id in self.refuse:
            self.refused[tier, user_id, kind] += count
            return False
        self.tracked[tier, user_id, kind] += count
        return True

    def track_all(self, counts: dict) -> list:
        return [(tier, user_id) for (tier, user_id, kind), count in counts.items()
                if self.track(tier, user_id, kind, count)]


def body(*events: dict) -> bytes:
    return json.dumps({"events": list(events)}).encode()


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
    """Valid event dicts of one type: the OpenAPI translator of test_openapi_fuzz, pooled fields overridden."""
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


# --- 1. record_all == apply ---------------------------------------------------------------------

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
    samples still equal applying every event in order.
    """
    budget = spec("clary_license_expiry_timestamp_seconds").budget
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
    assert expiry[(("license", rec._license_id("L1")), ("tier", "lite"))] == 3e9
    assert expiry[(("license", "other"), ("tier", "lite"))] == 4e9


# --- 2. DedupeWindow.admit == checking ids one by one ----------------------------------------------------

class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def items_with_ids(ids: list) -> list:
    return [msgspec.convert({"type": "feature_used", "tier": "lite", "feature": "ocr", "id": event_id}, Event)
            for event_id in ids]


def positions(items: list, chosen: list) -> list[int]:
    """Where each of ``chosen`` (the same objects) sits in ``items``."""
    where = {id(event): index for index, event in enumerate(items)}
    return [where[id(event)] for event in chosen]


def admit_one_by_one(window: DedupeWindow, items: list) -> tuple[list, int]:
    """The reference: ``id in window`` then ``window.add(id)``, item by item (None ids always fresh)."""
    fresh, duplicates = [], 0
    for event in items:
        event_id = event.id
        if event_id is not None:
            if event_id in window:
                duplicates += 1
                continue
            window.add(event_id)
        fresh.append(event)
    return fresh, duplicates


ID_OR_NONE = st.sampled_from(["a", "b", "c", "d", "e", "f", "g", None])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(max_ids=st.integers(1, 16), ttl=st.sampled_from([2.0, 10.0, 1e9]),
       batches=st.lists(st.tuples(st.sampled_from([0.0, 0.0, 0.5, 1.0, 3.0]), st.lists(ID_OR_NONE, max_size=12)),
                        max_size=12))
def test_admit_matches_checking_ids_one_by_one(max_ids, ttl, batches):
    """Fast path or fallback, admit gives the same fresh items, duplicates and window contents as id-by-id checks.

    Ids from a small alphabet (duplicates across and inside batches), None
    ids, rotation by size (max_ids 1..16) and by age (a fake clock, tick
    once per batch as the API does).
    """
    clock = FakeClock()
    window = DedupeWindow(max_ids=max_ids, ttl=ttl, clock=clock)
    reference = DedupeWindow(max_ids=max_ids, ttl=ttl, clock=clock)
    for advance, ids in batches:
        clock.now += advance
        window.tick()
        reference.tick()
        items = items_with_ids(ids)
        fresh, duplicates = window.admit(items)
        want_fresh, want_duplicates = admit_one_by_one(reference, items)
        assert [id(event) for event in fresh] == [id(event) for event in want_fresh]
        assert duplicates == want_duplicates
        assert (window._current, window._previous, window._since) == \
            (reference._current, reference._previous, reference._since)
        assert len(window) <= max_ids


def test_admit_counts_duplicates_inside_one_batch_and_never_None():
    """A repeated id inside one batch is a duplicate; items without an id are always fresh."""
    window = DedupeWindow(max_ids=100)
    items = items_with_ids(["a", "a", None, None, "b", "a"])
    fresh, duplicates = window.admit(items)
    assert positions(items, fresh) == [0, 2, 3, 4]
    assert duplicates == 2
    assert len(window) == 2 and "a" in window and "b" in window


def test_admit_fast_path_returns_the_batch_and_remembers_every_id():
    """All-new distinct ids take the set path (the same list back); a retry of them is all duplicates."""
    window = DedupeWindow(max_ids=100)
    items = items_with_ids(["a", "b", "c"])
    fresh, duplicates = window.admit(items)
    assert fresh is items and duplicates == 0
    assert window.admit(items_with_ids(["c", "b", "a", "d"])) == (items_with_ids(["c", "b", "a", "d"])[3:], 3)


def test_admit_rotates_by_size_like_add():
    """max_ids 4 (generations of 2): ids are remembered for the next 2 ids, then forgotten."""
    window = DedupeWindow(max_ids=4)
    assert window.admit(items_with_ids(["a", "b"]))[1] == 0  # current reaches 2: rotated, {a, b} previous
    assert window._previous == {"a", "b"} and window._current == set()
    assert window.admit(items_with_ids(["a"]))[1] == 1  # still remembered
    assert window.admit(items_with_ids(["c", "d"]))[1] == 0  # rotated again: {a, b} forgotten
    items = items_with_ids(["a", "c"])
    fresh, duplicates = window.admit(items)
    assert (positions(items, fresh), duplicates) == ([0], 1)
    assert len(window) <= 4


def test_admit_rotates_by_age_on_tick():
    """ttl 10: an id survives one rotation by age (5 s) and is forgotten at the second."""
    clock = FakeClock()
    window = DedupeWindow(max_ids=100, ttl=10.0, clock=clock)
    window.admit(items_with_ids(["a"]))
    clock.now += 4.9
    window.tick()
    assert window._current == {"a"}
    clock.now += 0.1
    window.tick()
    assert window._previous == {"a"} and window.admit(items_with_ids(["a"]))[1] == 1
    clock.now += 5.0
    window.tick()
    assert "a" not in window and window.admit(items_with_ids(["a"]))[1] == 0


# --- 3. DeferredUpdates ----------------------------------------------------------------------------------

def test_deferred_updates_are_available_with_in_memory_values():
    """This prometheus_client keeps values in memory with the histogram layout the fold writes into."""
    assert exporter.instrument.deferred.available() is True
    registry, rec = new_recorder()
    assert isinstance(rec._deferred, DeferredUpdates)


class _NoLayoutHistogram:
    """A histogram without the private ``_sum``/``_buckets`` the fold needs (another client version)."""

    def __init__(self, *args, **kwargs):
        self._upper_bounds = [1.0, math.inf]


@pytest.mark.parametrize("how", ["multiprocess", "other layout"])
def test_deferral_off_in_multiprocess_mode_or_another_layout(monkeypatch, how):
    """available() is False in multiprocess mode (values in files): batches then record straight in."""
    if how == "multiprocess":
        monkeypatch.setattr(prometheus_values.ValueClass, "_multiprocess", True)
    else:
        monkeypatch.setattr(_compat, "Histogram", _NoLayoutHistogram)
    assert exporter.instrument.deferred.available() is False
    registry, rec = new_recorder()
    assert rec._deferred is None
    assert rec.before_collect(lambda: None) is False
    batch = rec.batch()
    batch.feature_used("lite", "ocr")
    batch.inference("lite", "ocr-fast", "success", 0.5)
    assert child_value(rec, "clary_feature_uses_total", "lite", "ocr", "success") == 1  # no collect needed
    assert rec.metrics.child("clary_inference_duration_seconds", "lite", "ocr-fast")._sum.get() == 0.5


def test_deferred_values_reach_the_metric_objects_only_when_collected():
    """A batch's counters and histograms sit in the thread's table until a collect folds them in."""
    registry, rec = new_recorder()
    batch = rec.batch()
    for _ in range(3):
        batch.feature_used("lite", "ocr")
    batch.inference("lite", "ocr-fast", "success", 0.05)
    histogram = rec.metrics.child("clary_inference_duration_seconds", "lite", "ocr-fast")
    assert child_value(rec, "clary_feature_uses_total", "lite", "ocr", "success") == 0
    assert histogram._sum.get() == 0 and sum(b.get() for b in histogram._buckets) == 0
    assert value(registry, "clary_feature_uses_total", tier="lite", feature="ocr", outcome="success") == 3
    assert child_value(rec, "clary_feature_uses_total", "lite", "ocr", "success") == 3
    assert value(registry, "clary_inference_duration_seconds_count", tier="lite", model="ocr-fast") == 1
    assert value(registry, "clary_inference_duration_seconds_bucket", tier="lite", model="ocr-fast", le="0.05") == 1
    assert value(registry, "clary_inference_duration_seconds_bucket", tier="lite", model="ocr-fast", le="0.025") == 0


INFERENCE_BOUNDS = [float(b) for b in spec("clary_inference_duration_seconds").buckets]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(values=st.lists(st.one_of(st.sampled_from([*INFERENCE_BOUNDS, 0.0, -1.0, 1e9]),
                                 st.floats(-1, 100, allow_nan=False)), min_size=1, max_size=30))
def test_deferred_histogram_buckets_equal_histogram_observe(values):
    """observe/observe_each through a batch fill the buckets Histogram.observe does, values on bounds included."""
    name = "clary_inference_duration_seconds"
    want_registry, want = new_recorder()
    for v in values:
        want.metrics.child(name, "lite", "ocr-fast").observe(v)
    one_registry, one = new_recorder()
    batch = one.batch()
    for v in values:
        batch.inference("lite", "ocr-fast", "success", v)
    bulk_registry, bulk = new_recorder()
    bulk.batch().observe_each(name, [("lite", "ocr-fast")] * len(values), values)

    def family(registry):
        return {k: v for k, v in samples(registry).items() if k[0].startswith(name)}

    assert_same_samples(family(one_registry), family(want_registry))
    assert_same_samples(family(bulk_registry), family(want_registry))


def test_deferred_histogram_treats_nan_like_histogram_observe():
    """A NaN observed through a batch lands in the same buckets (none) as with Histogram.observe."""
    name = "clary_inference_duration_seconds"
    want_registry, want = new_recorder()
    want.metrics.child(name, "lite", "ocr-fast").observe(math.nan)
    registry, rec = new_recorder()
    rec.batch().inference("lite", "ocr-fast", "success", math.nan)

    def buckets(registry):
        return {k: v for k, v in samples(registry).items() if k[0] in (f"{name}_bucket", f"{name}_count")}

    assert buckets(registry) == buckets(want_registry)


def test_repeated_scrapes_with_direct_updates_mixed_in_stay_exact():
    """A fold adds only what is new since the last one; direct updates in between are neither lost nor doubled."""
    registry, rec = new_recorder()
    uses = dict(tier="lite", feature="ocr", outcome="success")
    count = dict(tier="lite", model="ocr-fast")
    batch = rec.batch()
    batch.feature_used("lite", "ocr")
    batch.feature_used("lite", "ocr")
    batch.inference("lite", "ocr-fast", "success", 1.0)
    assert value(registry, "clary_feature_uses_total", **uses) == 2
    assert value(registry, "clary_feature_uses_total", **uses) == 2
    rec.feature_used("lite", "ocr")  # direct, on the metric object
    rec.inference("lite", "ocr-fast", "success", 2.0)
    assert value(registry, "clary_feature_uses_total", **uses) == 3
    assert value(registry, "clary_inference_duration_seconds_count", **count) == 2
    batch.feature_used("lite", "ocr")
    rec.batch().inference("lite", "ocr-fast", "success", 4.0)
    for _ in range(3):
        assert value(registry, "clary_feature_uses_total", **uses) == 4
        assert value(registry, "clary_inference_requests_total", outcome="success", **count) == 3
        assert value(registry, "clary_inference_duration_seconds_count", **count) == 3
        assert value(registry, "clary_inference_duration_seconds_sum", **count) == 7.0
        assert value(registry, "clary_inference_duration_seconds_bucket", le="1.0", **count) == 1


def race_with_scraper(registry: CollectorRegistry, writers: list) -> list[dict]:
    """Run ``writers`` in threads while another thread scrapes ``registry`` back to back; the scrapes.

    A tiny switch interval makes the threads interleave often; errors in any
    thread fail the test; at least three scrapes are taken.
    """
    start = threading.Barrier(len(writers) + 1)
    done = threading.Event()
    scraped: list[dict] = []
    errors: list[BaseException] = []

    def guarded(work) -> None:
        try:
            start.wait(10)
            work()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def scrape() -> None:
        while not done.is_set() or len(scraped) < 3:
            scraped.append(samples(registry))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=guarded, args=(work,)) for work in writers]
        reader = threading.Thread(target=guarded, args=(scrape,))
        for thread in (reader, *threads):
            thread.start()
        for thread in threads:
            thread.join(60)
        done.set()
        reader.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert not errors
    return scraped


def test_two_writer_threads_and_a_scraping_thread_give_exact_totals():
    """Two threads record through batches while a third scrapes: every scrape monotonic, final totals exact."""
    registry, rec = new_recorder()
    rounds = 2000

    def writer(tier: str) -> None:
        for i in range(rounds):
            batch = rec.batch()
            batch.feature_used(tier, "ocr")
            batch.inference(tier, "ocr-fast", "success", 0.25 if i % 2 else 1.0)
            batch.count_each("clary_template_uses_total", [(tier, "custom")] * 2)

    scraped = race_with_scraper(registry, [lambda: writer("lite"), lambda: writer("standard")])
    final = samples(registry)
    for tier in ("lite", "standard"):
        uses = ("clary_feature_uses_total", (("feature", "ocr"), ("outcome", "success"), ("tier", tier)))
        count = ("clary_inference_duration_seconds_count", (("model", "ocr-fast"), ("tier", tier)))
        total = ("clary_inference_duration_seconds_sum", (("model", "ocr-fast"), ("tier", tier)))
        low = ("clary_inference_duration_seconds_bucket", (("le", "0.25"), ("model", "ocr-fast"), ("tier", tier)))
        templates = ("clary_template_uses_total", (("kind", "custom"), ("tier", tier)))
        assert (final[uses], final[count], final[total], final[low], final[templates]) == \
            (rounds, rounds, rounds / 2 * 1.25, rounds / 2, 2 * rounds)
        for key in (uses, count, low, templates):
            seen = [s.get(key, 0.0) for s in scraped]
            assert seen == sorted(seen) and seen[-1] <= final[key], key
    assert len(scraped) >= 3


def test_finished_threads_are_folded_then_released_when_a_new_thread_starts():
    """A finished thread's totals still show; its table goes once another thread makes one, totals unchanged."""
    registry, rec = new_recorder()
    deferred = rec._deferred
    uses = dict(tier="lite", feature="sso", outcome="success")
    tables = []

    def work(times: int) -> None:
        batch = rec.batch()
        tables.append(deferred.table())
        for _ in range(times):
            batch.feature_used("lite", "sso")
        batch.session_ended("lite", 60.0)

    first = threading.Thread(target=work, args=(5,))
    first.start()
    first.join()
    assert value(registry, "clary_feature_uses_total", **uses) == 5  # folded although the thread is gone
    second = threading.Thread(target=work, args=(2,))
    second.start()
    second.join()  # not scraped: its totals are only in its (finished) table

    def holds(table) -> bool:
        return any(entry[0] is table for series in deferred._series.values() for entry in series)

    assert not holds(tables[0]), "the first thread's table must go when the second thread made one"
    assert holds(tables[1])
    third = threading.Thread(target=work, args=(1,))
    third.start()
    third.join()
    assert not holds(tables[1]), "tables of finished threads must be released"
    assert holds(tables[2])
    assert value(registry, "clary_feature_uses_total", **uses) == 8
    assert value(registry, "clary_session_duration_seconds_count", tier="lite") == 3
    assert value(registry, "clary_session_duration_seconds_sum", tier="lite") == 180.0
    assert value(registry, "clary_feature_uses_total", **uses) == 8


def test_series_limit_restart_keeps_totals_exact_and_the_table_bounded(monkeypatch):
    """Past SERIES_LIMIT raw label tuples a thread's table is folded and emptied: bounded, nothing lost or doubled."""
    monkeypatch.setattr(exporter.instrument.deferred, "SERIES_LIMIT", 3)
    registry, rec = new_recorder()
    batch = rec.batch()
    table = rec._deferred.table()
    for round_ in range(1, 4):
        for i in range(10):
            batch.feature_used("lite", f"feature-{i}")  # distinct raw values, all "other"
            batch.inference("lite", f"model-{i}", "success", 1.0)
            assert len(table.counters) + len(table.histograms) <= 3
        assert sum(len(series) for series in rec._deferred._series.values()) <= 3
        assert value(registry, "clary_feature_uses_total", tier="lite", feature="other",
                     outcome="success") == 10 * round_
        assert value(registry, "clary_inference_requests_total", tier="lite", model="other",
                     outcome="success") == 10 * round_
        assert value(registry, "clary_inference_duration_seconds_count", tier="lite", model="other") == 10 * round_
        assert value(registry, "clary_inference_duration_seconds_sum", tier="lite", model="other") == 10 * round_


def test_observe_each_across_a_series_limit_restart(monkeypatch):
    """Limit 3: observe m1, then observe_each m2, m3, m4, m1 restarts mid-call: m1 counted twice, others once."""
    monkeypatch.setattr(exporter.instrument.deferred, "SERIES_LIMIT", 3)
    registry, rec = new_recorder()
    name = "clary_model_load_duration_seconds"
    m1, m2, m3, m4 = "ocr-fast", "ner-base", "gpt-4o", "layout-base"  # allow-listed: four distinct series
    batch = rec.batch()
    batch.model_loaded(m1, 1.0)
    batch.observe_each(name, [(m2,), (m3,), (m4,), (m1,), (m2,)], [2.0, 3.0, 4.0, 5.0, None])  # None: skipped
    table = rec._deferred.table()
    assert len(table.counters) + len(table.histograms) <= 3
    assert value(registry, f"{name}_count", model=m1) == 2
    assert value(registry, f"{name}_sum", model=m1) == 6.0
    for model, observed in ((m2, 2.0), (m3, 3.0), (m4, 4.0)):
        assert value(registry, f"{name}_count", model=model) == 1
        assert value(registry, f"{name}_sum", model=model) == observed
    assert value(registry, f"{name}_bucket", model=m1, le="5.0") == 2
    assert value(registry, f"{name}_bucket", model=m1, le="2.5") == 1


REJECTED_CALLS = {
    "inference outcome": lambda r: r.inference("lite", "ocr-fast", "maybe", 1.0),
    "document outcome": lambda r: r.document_processed("lite", "pdf", "maybe", 1.0, ["ocr"]),
    "feedback type": lambda r: r.feedback("lite", "nonsense", 3),
    "http code": lambda r: r.http_request("lite", "GET", "/a", 99, 0.1),
}


@pytest.mark.parametrize("call", REJECTED_CALLS.values(), ids=REJECTED_CALLS.keys())
def test_label_rejected_is_raised_by_the_batch_call_and_records_nothing(call):
    """A value with no fallback raises LabelRejected at call time, as on the recorder; nothing is kept."""
    untouched_registry, _ = new_recorder()
    plain_registry, plain = new_recorder()
    with pytest.raises(LabelRejected):
        call(plain)
    registry, rec = new_recorder()
    batch = rec.batch()
    with pytest.raises(LabelRejected):
        call(batch)
    batch.commit()
    assert all(not series for series in rec._deferred._series.values())
    assert_same_samples(samples(registry), samples(untouched_registry))
    assert_same_samples(samples(plain_registry), samples(untouched_registry))
    batch.inference("lite", "ocr-fast", "success", 1.0)  # the batch still works
    assert value(registry, "clary_inference_requests_total", tier="lite", model="ocr-fast", outcome="success") == 1


NEGATIVE_CALLS = {
    "llm tokens": lambda r: r.llm_call("lite", "openai", "gpt-4o", "success", 1.0, None, -5, 3),
    "event count": lambda r: r.event("feature_used", "accepted", -1),
    "add_each": lambda r: r.add_each("clary_llm_tokens_total", [("lite", "openai", "gpt-4o", "input")] * 2, [2, -7]),
}


@pytest.mark.parametrize("call", NEGATIVE_CALLS.values(), ids=NEGATIVE_CALLS.keys())
def test_negative_increments_raise_value_error_through_a_batch_like_the_recorder(call):
    """Counters only go up: a batch raises ValueError at call time where the plain recorder does, same values after."""
    plain_registry, plain = new_recorder()
    with pytest.raises(ValueError, match="non-negative"):
        call(plain)
    registry, rec = new_recorder()
    batch = rec.batch()
    with pytest.raises(ValueError, match="non-negative"):
        call(batch)
    batch.commit()
    # The plain recorder creates the series (at 0) before inc refuses; the batch refuses first.
    assert nonzero(samples(registry)) == nonzero(samples(plain_registry))


def test_sources_run_before_any_family_is_folded():
    """before_collect sources run first on every catalog family's collect (gauges too): what they record is in it."""
    registry, rec = new_recorder()
    calls = []
    held = [("lite", "sso")]

    def source() -> None:
        calls.append(1)
        while held:
            rec.batch().feature_used(*held.pop())

    assert rec.before_collect(source) is True
    assert not calls and child_value(rec, "clary_feature_uses_total", "lite", "sso", "success") == 0
    list(rec.metrics.families["clary_queue_length"].collect())  # a gauge family: the source runs too
    assert len(calls) == 1
    held.append(("lite", "sso"))
    uses = rec.metrics.families["clary_feature_uses_total"]
    got = {tuple(sorted(s.labels.items())): s.value for metric in uses.collect() for s in metric.samples
           if s.name == "clary_feature_uses_total"}
    assert got[(("feature", "sso"), ("outcome", "success"), ("tier", "lite"))] == 2
    assert len(calls) == 2


def test_batch_gauges_are_set_at_commit_last_value_per_series():
    """Gauges in a batch wait for commit; the last value per series wins, also across raw values folded into other."""
    registry, rec = new_recorder()
    batch = rec.batch()
    batch.queue_length("ocr", 5)
    batch.queue_length("q1", 1)
    batch.queue_length("q2", 2)
    batch.queue_length("ocr", 6)
    batch.queue_length("q1", 3)
    assert child_value(rec, "clary_queue_length", "ocr") == 0
    batch.commit()
    assert child_value(rec, "clary_queue_length", "ocr") == 6
    assert child_value(rec, "clary_queue_length", "q1") == 3  # q1, q2: the same "other" child
    batch.commit()  # nothing left to set
    rec.queue_length("ocr", 1)
    batch.commit()
    assert value(registry, "clary_queue_length", queue="ocr") == 1


# --- 4. EventBacklog, through IngestApi.ingest -----------------------------------------------------------

FEATURE_USED = {"type": "feature_used", "tier": "lite", "feature": "ocr"}
INFERENCE = {"type": "inference", "tier": "lite", "model": "ocr-fast", "duration_seconds": 0.5}
USES = dict(tier="lite", feature="ocr", outcome="success")


def events_total(registry, type_: str, outcome: str = "accepted") -> float:
    return value(registry, "clary_exporter_events_total", type=type_, outcome=outcome)


def make_api(tmp_path) -> tuple:
    """The exporter app's IngestApi (as create_app wires it) and its own registry."""
    registry = CollectorRegistry()
    app = create_app(make_config(tmp_path), registry)
    return app[INGEST_KEY], registry


@pytest.fixture
def ingest_api(tmp_path):
    return make_api(tmp_path)


def activity(api, user: str, kind: str, tier: str = "lite") -> int:
    """Per-user activity the API buffered for ``user`` (what the store gets on flush)."""
    hashed = api.recorder.hasher.digest(user)
    return sum(count for (who, _, t, k), count in api.activity.pending.items() if (who, t, k) == (hashed, tier, kind))


def test_queued_events_are_recorded_by_the_next_collect(ingest_api):
    """Below fold_at accepted events wait in the backlog; the next collect records all of them, once."""
    api, registry = ingest_api
    result = api.ingest(body(FEATURE_USED, FEATURE_USED, FEATURE_USED, INFERENCE))
    assert (result.accepted, result.rejected, result.duplicates, result.errors) == (4, 0, 0, [])
    assert api.backlog.deferring is True and len(api.backlog) == 4
    assert child_value(api.recorder, "clary_feature_uses_total", "lite", "ocr", "success") == 0
    assert value(registry, "clary_feature_uses_total", **USES) == 3
    assert len(api.backlog) == 0
    assert value(registry, "clary_inference_duration_seconds_count", tier="lite", model="ocr-fast") == 1
    assert events_total(registry, "feature_used") == 3 and events_total(registry, "inference") == 1
    assert value(registry, "clary_feature_uses_total", **USES) == 3  # a second scrape adds nothing


def test_gauges_wait_in_the_backlog_and_the_next_collect_sets_them(ingest_api):
    """queue_length and model memory are gauges: queued like the rest, set before the next collect reads them."""
    api, registry = ingest_api
    api.ingest(body({"type": "queue_length", "queue": "ocr", "length": 3},
                    {"type": "model_load", "model": "layout-base", "duration_seconds": 2.0, "memory_bytes": 1e9}))
    rec = api.recorder
    assert child_value(rec, "clary_queue_length", "ocr") == 0
    assert len(api.backlog) == 2
    assert value(registry, "clary_queue_length", queue="ocr") == 3
    assert value(registry, "clary_model_memory_bytes", model="layout-base") == 1e9
    assert len(api.backlog) == 0
    assert value(registry, "clary_model_load_duration_seconds_sum", model="layout-base") == 2.0
    assert events_total(registry, "queue_length") == 1 and events_total(registry, "model_load") == 1


def test_backlog_folds_inline_at_fold_at(ingest_api):
    """At fold_at queued events the ingest call records them itself (into its thread's table)."""
    api, registry = ingest_api
    api.backlog.fold_at = 5
    api.ingest(body(*[FEATURE_USED] * 4))
    assert len(api.backlog) == 4
    table = api.recorder._deferred.table()
    assert ("clary_feature_uses_total", ("lite", "ocr", "success")) not in table.counters
    api.ingest(body(FEATURE_USED, INFERENCE))
    assert len(api.backlog) == 0
    assert table.counters["clary_feature_uses_total", ("lite", "ocr", "success")][0] == 5
    assert table.counters["clary_exporter_events_total", ("feature_used", "accepted")][0] == 5
    api.backlog.fold_at = 10**9
    api.backlog.fold = lambda: pytest.fail("nothing was left to fold")  # the collect needs no backlog now
    assert value(registry, "clary_feature_uses_total", **USES) == 5
    assert events_total(registry, "inference") == 1


def test_per_user_activity_and_metrics_when_the_backlog_folds(ingest_api):
    """user_action/session: per-user activity, the active-user sketch and the counters all wait for the fold."""
    api, registry = ingest_api
    api.ingest(body({"type": "user_action", "tier": "lite", "action": "login", "user_id": "u1"},
                    {"type": "user_action", "tier": "lite", "action": "login", "user_id": "u1"},
                    {"type": "user_action", "tier": "lite", "action": "dance", "user_id": "u1"},
                    {"type": "session", "tier": "lite", "duration_seconds": 600, "user_id": "u2"}))
    rec = api.recorder
    assert activity(api, "u1", "login") == 0 and round(rec.active_users.estimate("lite", "5m")) == 0
    api.backlog.fold()
    assert activity(api, "u1", "login") == 2 and activity(api, "u1", "other") == 1
    assert activity(api, "u2", "session") == 1
    assert round(rec.active_users.estimate("lite", "5m")) == 2
    assert child_value(rec, "clary_user_actions_total", "lite", "login") == 0
    assert value(registry, "clary_user_actions_total", tier="lite", action="login") == 2
    assert value(registry, "clary_user_actions_total", tier="lite", action="other") == 1
    assert value(registry, "clary_session_duration_seconds_count", tier="lite") == 1
    assert value(registry, "clary_active_users", tier="lite", window="5m") == 2


def test_opt_out_between_batches_is_respected(ingest_api):
    """A user opted out after one batch: the next batch still counts, but keeps nothing per user."""
    api, registry = ingest_api
    action = {"type": "user_action", "action": "login", "user_id": "u1"}
    api.ingest(body({**action, "tier": "lite"}))
    api.backlog.fold()
    assert activity(api, "u1", "login") == 1
    hashed = api.recorder.hasher.digest("u1")
    api.backlog.fold()  # what POST /users/u1/opt-out does
    api.activity.opted_out.add(hashed)
    api.ingest(body({**action, "tier": "standard"}, {"type": "session", "tier": "standard", "duration_seconds": 5,
                                                     "user_id": "u1"}))
    api.backlog.fold()
    assert activity(api, "u1", "login", "standard") == 0 and activity(api, "u1", "session", "standard") == 0
    assert round(api.recorder.active_users.estimate("standard", "5m")) == 0
    assert value(registry, "clary_user_actions_total", tier="lite", action="login") == 1
    assert value(registry, "clary_user_actions_total", tier="standard", action="login") == 1
    assert value(registry, "clary_session_duration_seconds_count", tier="standard") == 1
    assert value(registry, "clary_active_users", tier="standard", window="5m") == 0
    assert value(registry, "clary_active_users", tier="lite", window="5m") == 1


def test_direct_gauge_set_after_an_ingested_one_wins(ingest_api):
    """recorder.queue_length("ocr", 5) after an ingested ocr=3: 5, also after the backlog is recorded."""
    api, registry = ingest_api
    api.ingest(body({"type": "queue_length", "queue": "ocr", "length": 3}))
    api.recorder.queue_length("ocr", 5)
    assert value(registry, "clary_queue_length", queue="ocr") == 5
    api.ingest(body(FEATURE_USED))
    assert value(registry, "clary_queue_length", queue="ocr") == 5
    assert events_total(registry, "queue_length") == 1


@pytest.mark.parametrize("how", ["no collect hook", "no deferral"])
def test_without_before_collect_nothing_is_queued(tmp_path, monkeypatch, how):
    """When the recorder cannot run code before a scrape, accepted events are recorded by ingest itself."""
    if how == "no collect hook":
        monkeypatch.setattr(Recorder, "before_collect", lambda self, source: False)
    else:  # multiprocess mode: no per-thread tables either
        monkeypatch.setattr(exporter.instrument.recorder_core, "deferred_available", lambda: False)
    api, registry = make_api(tmp_path)
    assert api.backlog.deferring is False
    api.ingest(body(FEATURE_USED, FEATURE_USED, {"type": "queue_length", "queue": "ocr", "length": 3}))
    assert len(api.backlog) == 0
    if how == "no deferral":  # straight into the metric objects
        assert child_value(api.recorder, "clary_feature_uses_total", "lite", "ocr", "success") == 2
    else:  # in this thread's table, folded by any collect
        table = api.recorder._deferred.table()
        assert table.counters["clary_feature_uses_total", ("lite", "ocr", "success")][0] == 2
    assert value(registry, "clary_feature_uses_total", **USES) == 2
    assert events_total(registry, "feature_used") == 2 and events_total(registry, "queue_length") == 1
    assert value(registry, "clary_queue_length", queue="ocr") == 3


def test_duplicates_and_rejects_are_counted_as_before(ingest_api):
    """Duplicate ids (also inside one batch) are skipped, not counted; rejected items count per type at once."""
    api, registry = ingest_api
    batch = body({**FEATURE_USED, "id": "a"}, {**FEATURE_USED, "id": "b"}, {**FEATURE_USED, "id": "a"},
                 {"type": "inference", "tier": "lite", "model": "ocr-fast"},  # no duration
                 {"type": "teleport"}, FEATURE_USED)
    result = api.ingest(batch)
    assert (result.accepted, result.rejected, result.duplicates) == (3, 2, 1)
    assert [(e.index, e.type, e.field) for e in result.errors] == [(3, "inference", "duration_seconds"),
                                                                    (4, "other", "type")]
    assert len(api.backlog) == 3
    assert events_total(registry, "inference", "rejected") == 1 and events_total(registry, "other", "rejected") == 1
    assert events_total(registry, "feature_used") == 3
    assert value(registry, "clary_feature_uses_total", **USES) == 3
    retry = api.ingest(batch)
    assert (retry.accepted, retry.rejected, retry.duplicates) == (1, 2, 3)  # the id-less item counts again
    assert events_total(registry, "feature_used") == 4
    assert events_total(registry, "feature_used", "rejected") == 0
    assert events_total(registry, "inference", "rejected") == 2 and events_total(registry, "other", "rejected") == 2
    assert value(registry, "clary_feature_uses_total", **USES) == 4


def test_license_validation_counts_the_license_active_by_the_next_scrape(ingest_api):
    """A validated license key is recorded with the backlog: clary_licenses_active has it in the next scrape."""
    api, registry = ingest_api
    api.ingest(body({"type": "license_validation", "tier": "lite", "result": "valid", "license_key": "LIC-1"},
                    {"type": "license_validation", "tier": "lite", "result": "valid", "license_key": "LIC-1"},
                    {"type": "license_validation", "tier": "standard", "result": "expired", "license_key": "LIC-2"}))
    assert value(registry, "clary_licenses_active", tier="lite") == 1
    assert value(registry, "clary_licenses_active", tier="standard") == 1
    assert value(registry, "clary_license_validations_total", tier="lite", result="valid") == 2


def test_ingest_while_another_thread_scrapes_gives_exact_totals(ingest_api):
    """One thread ingests (inline folds at fold_at, collect folds in between), another scrapes: exact totals."""
    api, registry = ingest_api
    api.backlog.fold_at = 37
    batches = 150

    def ingest() -> None:
        for i in range(batches):
            api.ingest(body(FEATURE_USED, FEATURE_USED, FEATURE_USED, INFERENCE, INFERENCE,
                            {"type": "user_action", "tier": "lite", "action": "login", "user_id": "u1"},
                            {"type": "queue_length", "queue": "ocr", "length": i}))

    scraped = race_with_scraper(registry, [ingest])
    assert value(registry, "clary_feature_uses_total", **USES) == 3 * batches
    assert value(registry, "clary_inference_duration_seconds_count", tier="lite", model="ocr-fast") == 2 * batches
    assert value(registry, "clary_inference_duration_seconds_sum", tier="lite", model="ocr-fast") == batches
    assert value(registry, "clary_user_actions_total", tier="lite", action="login") == batches
    assert value(registry, "clary_queue_length", queue="ocr") == batches - 1
    for type_, per_batch in (("feature_used", 3), ("inference", 2), ("user_action", 1), ("queue_length", 1)):
        assert events_total(registry, type_) == per_batch * batches
    assert len(api.backlog) == 0
    assert activity(api, "u1", "login") == batches
    key = ("clary_feature_uses_total", (("feature", "ocr"), ("outcome", "success"), ("tier", "lite")))
    seen = [s[key] for s in scraped]
    assert seen == sorted(seen) and len(scraped) >= 3


def test_a_scrape_during_another_threads_fold_includes_events_accepted_before_it(ingest_api, monkeypatch):
    """Thread A folds inline (slowly); an event accepted earlier must be in a scrape that starts meanwhile."""
    api, registry = ingest_api
    rec = api.recorder
    api.backlog.fold_at = 3
    entered, release = threading.Event(), threading.Event()
    seen = rec.active_licenses.seen

    def slow_seen(tier: str, license_id: str) -> None:  # recording LicenseValidation stalls here
        entered.set()
        release.wait(30)
        seen(tier, license_id)

    monkeypatch.setattr(rec.active_licenses, "seen", slow_seen)
    api.ingest(body({"type": "license_validation", "tier": "lite", "result": "valid", "license_key": "LIC-1"}))
    assert api.ingest(body(FEATURE_USED)).accepted == 1  # accepted: its ingest call has returned
    folding = threading.Thread(target=api.ingest, args=(body({"type": "feature_blocked", "tier": "lite",
                                                               "feature": "sso"}),))
    during: list[float] = []
    scraper = threading.Thread(target=lambda: during.append(value(registry, "clary_feature_uses_total", **USES)))
    folding.start()
    try:
        assert entered.wait(10)
        scraper.start()  # a scrape that starts now, while A is still recording what it took from the queue
        scraper.join(0.5)  # it may wait for A's fold to finish (a correct fix would make it wait)
    finally:
        release.set()
        folding.join(10)
        scraper.join(10)
    assert value(registry, "clary_feature_uses_total", **USES) == 1
    assert during == [1]


# --- 5. bulk helpers: the recorder, a batch, a batch without deferral --------------------------------------

MODES = ["recorder", "batch", "batch without deferral"]


def run_in(mode: str, monkeypatch, action) -> tuple[CollectorRegistry, Recorder]:
    """``action(target)`` on a plain recorder or a batch (committed), then the registry to read."""
    registry, rec = no_deferral_recorder(monkeypatch) if mode == "batch without deferral" else new_recorder()
    if mode == "recorder":
        action(rec)
    else:
        batch = rec.batch()
        action(batch)
        batch.commit()
    return registry, rec


@pytest.mark.parametrize("mode", MODES)
def test_count_each_counts_each_tuple(monkeypatch, mode):
    """One increment per tuple, summed per tuple; off-list raw values fold into the same ``other`` series."""
    registry, _ = run_in(mode, monkeypatch, lambda r: r.count_each("clary_feature_uses_total", [
        ("lite", "ocr", "success"), ("lite", "teleport", "success"), ("lite", "ocr", "success"),
        ("lite", "x-ray", "success"), ("lite", "ocr", "failure"), ("lite", "ocr", "success")]))
    assert value(registry, "clary_feature_uses_total", tier="lite", feature="ocr", outcome="success") == 3
    assert value(registry, "clary_feature_uses_total", tier="lite", feature="ocr", outcome="failure") == 1
    assert value(registry, "clary_feature_uses_total", tier="lite", feature="other", outcome="success") == 2


@pytest.mark.parametrize("mode", MODES)
def test_add_each_sums_amounts_and_skips_zeros(monkeypatch, mode):
    """Amounts summed per tuple; a zero creates no series at all."""
    name = "clary_llm_tokens_total"
    first, second = ("lite", "openai", "gpt-4o", "input"), ("lite", "openai", "gpt-4o", "output")
    third = ("standard", "openai", "gpt-4o", "input")
    registry, _ = run_in(mode, monkeypatch, lambda r: r.add_each(name, [first, second, first, third, second],
                                                                  [5, 0, 7, 2.5, 0]))
    assert value(registry, name, tier="lite", provider="openai", model="gpt-4o", direction="input") == 12
    assert value(registry, name, tier="standard", provider="openai", model="gpt-4o", direction="input") == 2.5
    assert registry.get_sample_value(name, dict(tier="lite", provider="openai", model="gpt-4o",
                                                direction="output")) is None


@pytest.mark.parametrize("mode", MODES)
def test_set_each_last_non_none_value_wins_also_when_labels_fold(monkeypatch, mode):
    """q1=1, q2=2, q1=3 (q1, q2 off-list: queue="other") ends at 3; a None never overwrites."""
    registry, _ = run_in(mode, monkeypatch, lambda r: r.set_each(
        "clary_queue_length", [("q1",), ("ocr",), ("q2",), ("q1",), ("ocr",), ("q2",)], [1, 4, 2, 3, None, None]))
    assert value(registry, "clary_queue_length", queue="other") == 3
    assert value(registry, "clary_queue_length", queue="ocr") == 4


@pytest.mark.parametrize("mode", MODES)
def test_observe_each_skips_none(monkeypatch, mode):
    """Each non-None value observed once in its series; None values are skipped."""
    name = "clary_inference_duration_seconds"
    a, b = ("lite", "ocr-fast"), ("lite", "mystery")
    registry, _ = run_in(mode, monkeypatch,
                         lambda r: r.observe_each(name, [a, b, a, a, b], [0.5, None, 1.0, None, 0.01]))
    assert value(registry, f"{name}_count", tier="lite", model="ocr-fast") == 2
    assert value(registry, f"{name}_sum", tier="lite", model="ocr-fast") == 1.5
    assert value(registry, f"{name}_bucket", tier="lite", model="ocr-fast", le="0.5") == 1
    assert value(registry, f"{name}_bucket", tier="lite", model="ocr-fast", le="1.0") == 2
    assert value(registry, f"{name}_count", tier="lite", model="other") == 1
    assert value(registry, f"{name}_bucket", tier="lite", model="other", le="0.01") == 1


BULK_CALLS = st.lists(st.one_of(
    st.tuples(st.just("count_each"), st.lists(st.tuples(st.sampled_from(["lite", "pro"]),
                                                        st.sampled_from(["ocr", "sso", "teleport"]),
                                                        st.sampled_from(["success", "failure"])), max_size=8)),
    st.tuples(st.just("add_each"), st.lists(st.tuples(st.sampled_from(["openai", "acme"]),
                                                      st.sampled_from([0, 0, 1, 2.5, 10**12])), max_size=8)),
    st.tuples(st.just("set_each"), st.lists(st.tuples(st.sampled_from(["ocr", "q1", "q2"]),
                                                      st.sampled_from([None, 0, 1, 2, 3.5])), max_size=8)),
    st.tuples(st.just("observe_each"), st.lists(st.tuples(st.sampled_from(["ocr-fast", "m1", "m2"]),
                                                          st.sampled_from([None, 0.0, 0.01, 0.3, 1.0, 60.0, 99.0])),
                                                max_size=8)),
), min_size=1, max_size=6)


def _bulk(target, calls) -> None:
    for helper, rows in calls:
        if helper == "count_each":
            target.count_each("clary_feature_uses_total", rows)
        elif helper == "add_each":
            target.add_each("clary_llm_tokens_total", [("lite", p, "gpt-4o", "input") for p, _ in rows],
                            [amount for _, amount in rows])
        elif helper == "set_each":
            target.set_each("clary_queue_length", [(q,) for q, _ in rows], [v for _, v in rows])
        else:
            target.observe_each("clary_inference_duration_seconds", [("lite", m) for m, _ in rows],
                                [v for _, v in rows])


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(calls=BULK_CALLS)
def test_bulk_helpers_agree_on_recorder_batch_and_batch_without_deferral(monkeypatch, calls):
    """Random sequences of the four helpers leave the same samples in all three modes."""
    want_registry, _ = run_in("recorder", monkeypatch, lambda r: _bulk(r, calls))
    for mode in MODES[1:]:
        registry, _ = run_in(mode, monkeypatch, lambda r: _bulk(r, calls))
        assert_same_samples(samples(registry), samples(want_registry))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(pairs=st.lists(st.tuples(st.sampled_from([("a",), ("b",), ("c",), ("d",), ("e",), ("f",), ()]),
                                st.one_of(st.none(), st.floats(allow_nan=True))), max_size=40))
def test_grouping_for_bulk_observe_equals_grouping_value_by_value(pairs):
    """Few tuples (picked out in C) or many (value by value): same groups, same order, None left out.

    The order of the tuples is the order of their first value, not of their
    first appearance: it decides which series the label guard admits first.
    """
    want: dict[tuple, list] = {}
    for key, v in pairs:
        if v is not None:
            want.setdefault(key, []).append(v)
    got = exporter.instrument.deferred.group_values([key for key, _ in pairs], (v for _, v in pairs))
    assert list(got) == list(want)
    assert {k: [repr(v) for v in vs] for k, vs in got.items()} == {k: [repr(v) for v in vs] for k, vs in want.items()}
