"""Label guard: allow-lists, fallbacks, rejections and series budgets."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter

from exporter.catalog import CODE, METHOD, METHODS, MODEL, ROUTE, TIER, TIERS, Kind, MetricSpec, spec
from exporter.labels import OVERFLOW_VALUE, LabelGuard, LabelRejected
from exporter.instrument.metrics import CatalogMetrics
from exporter.instrument.hashing import Hasher
from exporter.instrument.recorder import Recorder

HTTP = "clary_http_requests_total"
OVERFLOW = "clary_exporter_label_overflow_total"


def series(registry: CollectorRegistry, sample_name: str) -> list[dict[str, str]]:
    """Label sets of every sample called ``sample_name`` that the registry exposes."""
    return [s.labels for family in registry.collect() for s in family.samples if s.name == sample_name]


def overflow(registry: CollectorRegistry, metric: str, label: str) -> float:
    return registry.get_sample_value(OVERFLOW, {"metric": metric, "label": label})


@pytest.fixture
def metrics():
    return CatalogMetrics(CollectorRegistry())


def value(metrics: CatalogMetrics, metric: str, label: str, raw: object) -> str:
    s = spec(metric)
    return metrics.guard.value(next(lab for lab in s.labels if lab.name == label), raw)


# --- allow-lists and fallbacks --------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "label", "raw", "expected"),
    [
        ("clary_documents_processed_total", "doc_type", "pdf", "pdf"),
        ("clary_documents_processed_total", "doc_type", "fax", "other"),
        ("clary_documents_processed_total", "doc_type", "PDF", "other"),
        ("clary_documents_processed_total", "tier", "lite", "lite"),
        ("clary_documents_processed_total", "tier", "LITE", "lite"),
        ("clary_documents_processed_total", "tier", "Gold", "unknown"),
        ("clary_documents_processed_total", "tier", "", "unknown"),
        ("clary_documents_processed_total", "tier", None, "unknown"),
        (HTTP, "method", "GET", "GET"),
        (HTTP, "method", "get", "GET"),
        (HTTP, "method", "BREW", "other"),
        (HTTP, "route", "/api/v1/documents/{id}", "/api/v1/documents/{id}"),
        (HTTP, "route", "", "unmatched"),
        (HTTP, "route", None, "unmatched"),
        (HTTP, "code", 200, "200"),
        (HTTP, "code", "404", "404"),
        (HTTP, "code", 100, "100"),
        (HTTP, "code", 599, "599"),
        ("clary_feature_uses_total", "feature", "ocr", "ocr"),
        ("clary_feature_uses_total", "feature", "telepathy", "other"),
        ("clary_inference_requests_total", "model", "ocr-fast", "ocr-fast"),
        ("clary_inference_requests_total", "model", "my-finetune-7b", "other"),
        ("clary_llm_requests_total", "provider", "anthropic", "anthropic"),
        ("clary_llm_requests_total", "provider", "acme-llm", "other"),
        ("clary_user_actions_total", "action", "upload", "upload"),
        ("clary_user_actions_total", "action", "jump", "other"),
        ("clary_errors_total", "error_type", "KeyError", "KeyError"),
        ("clary_errors_total", "error_type", "MyCustomError", "other"),
        ("clary_quota_exceeded_total", "limit", "documents", "documents"),
        ("clary_quota_exceeded_total", "limit", "gpus", "other"),
        ("clary_license_validations_total", "result", "revoked", "revoked"),
        ("clary_license_validations_total", "result", "weird", "error"),
        ("clary_queue_length", "queue", "ocr", "ocr"),
        ("clary_queue_length", "queue", "mystery", "other"),
    ],
)
def test_value_kept_in_set_and_falls_back_outside(metrics, metric, label, raw, expected):
    assert value(metrics, metric, label, raw) == expected


@pytest.mark.parametrize(
    ("metric", "label", "raw"),
    [
        ("clary_documents_processed_total", "outcome", "maybe"),
        ("clary_documents_processed_total", "outcome", "SUCCESS"),
        (HTTP, "code", "abc"),
        (HTTP, "code", 99),
        (HTTP, "code", 600),
        (HTTP, "code", None),
        ("clary_feedback_submissions_total", "type", "rant"),
        ("clary_template_uses_total", "kind", "stolen"),
        ("clary_llm_tokens_total", "direction", "sideways"),
    ],
)
def test_value_without_fallback_is_rejected_naming_the_label(metrics, metric, label, raw):
    with pytest.raises(LabelRejected) as info:
        value(metrics, metric, label, raw)
    assert info.value.label == label
    assert info.value.value == raw
    assert repr(label) in str(info.value)


def test_rejected_value_through_recorder_records_nothing():
    registry = CollectorRegistry()
    rec = Recorder(registry, Hasher("s" * 32))
    with pytest.raises(LabelRejected, match="'outcome'"):
        rec.document_processed("lite", "pdf", "maybe")
    with pytest.raises(LabelRejected, match="'code'"):
        rec.http_request("lite", "GET", "/x", 600, 0.1)
    assert registry.get_sample_value("clary_documents_processed_total",
                                     {"tier": "lite", "doc_type": "pdf", "outcome": "success"}) == 0
    assert series(registry, HTTP) == []


def test_rejection_hint_lists_allowed_values(metrics):
    with pytest.raises(LabelRejected, match="allowed: failure, success"):
        value(metrics, "clary_documents_processed_total", "outcome", "maybe")


def test_allow_lists_replaced_from_config():
    registry = CollectorRegistry()
    metrics = CatalogMetrics(registry, allow_lists={"doc_type": ["pdf", "fax"], "model": ["my-model"]})
    assert value(metrics, "clary_documents_processed_total", "doc_type", "fax") == "fax"
    assert value(metrics, "clary_documents_processed_total", "doc_type", "docx") == "other"
    assert value(metrics, "clary_inference_requests_total", "model", "my-model") == "my-model"
    assert value(metrics, "clary_inference_requests_total", "model", "ocr-fast") == "other"
    # Untouched configurable labels keep the catalog defaults.
    assert value(metrics, "clary_feature_uses_total", "feature", "ocr") == "ocr"
    # Prefilled children follow the configured list.
    assert registry.get_sample_value(
        "clary_documents_processed_total", {"tier": "lite", "doc_type": "fax", "outcome": "success"}) == 0
    assert registry.get_sample_value(
        "clary_documents_processed_total", {"tier": "lite", "doc_type": "docx", "outcome": "success"}) is None
    metrics.child("clary_documents_processed_total", "lite", "fax", "success").inc()
    assert registry.get_sample_value(
        "clary_documents_processed_total", {"tier": "lite", "doc_type": "fax", "outcome": "success"}) == 1


def test_fixed_labels_cannot_be_replaced_by_config():
    metrics = CatalogMetrics(CollectorRegistry(), allow_lists={"tier": ["gold"], "outcome": ["maybe"]})
    assert value(metrics, "clary_documents_processed_total", "tier", "gold") == "unknown"
    with pytest.raises(LabelRejected):
        value(metrics, "clary_documents_processed_total", "outcome", "maybe")


# --- series budget --------------------------------------------------------------


def word(i: int) -> str:
    """The i-th letters-only route word (``a``, ``b``, ... ``ba``...): distinct templates the route guard keeps."""
    letters = ""
    while True:
        i, digit = divmod(i, 26)
        letters = "abcdefghijklmnopqrstuvwxyz"[digit] + letters
        if not i:
            return letters


def random_word(rng: random.Random) -> str:
    """A route word (letters only), so that the route guard keeps it and each route is its own series."""
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(10))


def test_route_flood_stays_within_budget_and_counts_overflow():
    registry = CollectorRegistry()
    rec = Recorder(registry, Hasher("s" * 32))
    budget = spec(HTTP).budget
    exact = rec.metrics.guard.exact_limit(spec(HTTP))
    # The reserve: every tier x method x code class, plus the catch-all series.
    assert exact == budget - (len(TIERS) + 1) * (len(METHODS) + 1) * 5 - 1
    rng = random.Random(7)
    n = 100_000
    tiers = (*TIERS, "unknown")
    routes = {f"/api/v1/{random_word(rng)}" for _ in range(n)}
    assert len(routes) == n  # all distinct, so every sample past the budget is a new series
    for route in routes:
        rec.http_request(rng.choice(tiers), rng.choice(METHODS), route, rng.choice((200, 404, 500)), 0.01)

    got = series(registry, HTTP)
    admitted = [s for s in got if s["route"] != OVERFLOW_VALUE]
    folded = [s for s in got if s["route"] == OVERFLOW_VALUE]
    assert len(admitted) == exact
    assert folded, "past the budget, samples land in route='other'"
    # Folded series only vary by the bounded labels, and the code by its class.
    assert {s["code"] for s in folded} == {"2xx", "4xx", "5xx"}
    assert len(folded) <= len(tiers) * len(METHODS) * 3
    assert len(got) <= budget

    totals = {
        tuple(sorted(s.labels.items())): s.value
        for f in registry.collect()
        for s in f.samples
        if s.name == HTTP
    }
    assert sum(totals.values()) == n, "no sample lost"
    folded_samples = sum(v for k, v in totals.items() if dict(k)["route"] == OVERFLOW_VALUE)
    assert folded_samples == n - exact
    assert overflow(registry, HTTP, "route") == folded_samples
    assert overflow(registry, HTTP, "code") == folded_samples
    assert overflow(registry, HTTP, "tier") == overflow(registry, HTTP, "method") == 0  # no catch-all needed
    # The histogram has its own budget and overflow count.
    hist = series(registry, "clary_http_request_duration_seconds_count")
    duration = spec("clary_http_request_duration_seconds")
    assert len([s for s in hist if s["route"] != OVERFLOW_VALUE]) == rec.metrics.guard.exact_limit(duration)
    assert len(hist) <= duration.budget
    assert overflow(registry, "clary_http_request_duration_seconds", "route") > 0


def test_folded_series_keep_the_status_class():
    """Past the budget ``code`` folds into its class: ``code=~"5.."`` (the error-rate alerts) still matches."""
    registry = CollectorRegistry()
    rec = Recorder(registry, Hasher("s" * 32))
    exact = rec.metrics.guard.exact_limit(spec(HTTP))
    for i in range(exact + 50):
        rec.http_request("lite", "GET", f"/r/{word(i)}", 503 if i % 2 else 200, 0.01)
    folded = {s["code"]: s for s in series(registry, HTTP) if s["route"] == OVERFLOW_VALUE}
    assert set(folded) == {"2xx", "5xx"}
    assert registry.get_sample_value(HTTP, {"tier": "lite", "method": "GET", "route": "other", "code": "5xx"}) == 25
    assert overflow(registry, HTTP, "route") == 50
    assert overflow(registry, HTTP, "code") == 50


def test_the_last_series_is_other_on_every_label():
    """Once folding has used the reserve too, everything new lands in one series, ``other`` on every label."""
    small = MetricSpec("clary_test_requests_total", Kind.COUNTER, "Test.", (TIER, METHOD, ROUTE, CODE), budget=30)
    registry = CollectorRegistry()
    overflow_counter = Counter("ovf", "Overflow.", ["metric", "label"], registry=registry)
    guard = LabelGuard(overflow_counter)
    assert guard.exact_limit(small) == 30 - 3 - 1  # a tenth of the budget for folded series, plus the catch-all
    got = [guard.values(small, (tier, method, f"/r/{word(i)}", code))
           for i, (tier, method, code) in enumerate((t, m, c) for t in (*TIERS, "unknown") for m in METHODS
                                                    for c in (200, 302, 404, 503))]
    assert len(set(got)) == 30 == guard.series(small)
    assert got[:26] == [(t, m, f"/r/{word(i)}", str(c)) for i, (t, m, c) in enumerate(
        (t, m, c) for t in (*TIERS, "unknown") for m in METHODS for c in (200, 302, 404, 503))][:26]
    # 26..28: route folds, code keeps its class (OPTIONS is the 7th method: 26 = 6 * 4 + 2).
    assert got[26:29] == [("lite", "OPTIONS", "other", "4xx"), ("lite", "OPTIONS", "other", "5xx"),
                          ("standard", "GET", "other", "2xx")]
    assert set(got[29:]) == {("other",) * 4}
    caught = len(got) - 29
    assert registry.get_sample_value("ovf_total", {"metric": small.name, "label": "tier"}) == caught
    assert registry.get_sample_value("ovf_total", {"metric": small.name, "label": "code"}) == len(got) - 26


def test_random_models_fall_to_other_without_overflow():
    registry = CollectorRegistry()
    rec = Recorder(registry, Hasher("s" * 32))
    rng = random.Random(11)
    tiers = (*TIERS, "unknown")
    n = 100_000
    for i in range(n):
        model = rng.choice(MODEL.values) if i % 10 == 0 else f"model-{rng.getrandbits(48):x}"
        rec.inference(rng.choice(tiers + ("Gold",)), model, rng.choice(("success", "failure")), 0.05)
    got = series(registry, "clary_inference_requests_total")
    assert len(got) <= len(tiers) * (len(MODEL.values) + 1) * 2
    assert {s["model"] for s in got} <= set(MODEL.values) | {"other"}
    assert {s["tier"] for s in got} <= set(tiers)
    assert sum(
        registry.get_sample_value("clary_inference_requests_total", s) for s in got
    ) == n
    assert registry.get_sample_value(
        "clary_inference_requests_total", {"tier": "lite", "model": "other", "outcome": "success"}) > 0
    assert overflow(registry, "clary_inference_requests_total", "model") == 0
    assert len(series(registry, "clary_inference_duration_seconds_count")) <= len(tiers) * (len(MODEL.values) + 1)


_SMALL = MetricSpec("clary_test_small_total", Kind.COUNTER, "Test.", (TIER, ROUTE), budget=5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(("lite", "pro", "standard", "")),
                          st.one_of(st.text(max_size=12), st.from_regex(r"/[a-z]{0,12}", fullmatch=True))),
                max_size=60))
def test_guard_budget_property(samples):
    """Whatever the input: the first series pass unchanged until the budget less its reserve,
    later new ones fold, the family never exceeds its budget, and every fold is counted."""
    registry = CollectorRegistry()
    overflow_counter = Counter("ovf", "Overflow.", ["metric", "label"], registry=registry)
    for label in ("tier", "route"):
        overflow_counter.labels(_SMALL.name, label)
    guard = LabelGuard(overflow_counter)
    exact = guard.exact_limit(_SMALL)
    assert exact == _SMALL.budget - 1
    admitted: set[tuple[str, str]] = set()  # every series the guard has handed out so far
    folds = [0, 0]
    for raw in samples:
        norm = tuple(guard.value(lab, v) for lab, v in zip(_SMALL.labels, raw))
        out = guard.values(_SMALL, raw)
        if norm in admitted or len(admitted) < exact:
            assert out == norm
        elif (norm[0], OVERFLOW_VALUE) in admitted:  # the tier's folded series exists: reused
            assert out == (norm[0], OVERFLOW_VALUE)
        else:  # no room for a new folded series: the catch-all
            assert out == (OVERFLOW_VALUE, OVERFLOW_VALUE)
        admitted.add(out)
        folds[0] += norm[0] != out[0]
        folds[1] += norm[1] != out[1]
    out_series = admitted
    assert len(out_series) <= _SMALL.budget
    assert registry.get_sample_value("ovf_total", {"metric": _SMALL.name, "label": "tier"}) == folds[0]
    assert registry.get_sample_value("ovf_total", {"metric": _SMALL.name, "label": "route"}) == folds[1]


_ANY_REQUEST = st.tuples(
    st.one_of(st.sampled_from((*TIERS, "unknown")), st.text(max_size=8)),
    st.one_of(st.sampled_from(METHODS), st.text(max_size=8)),
    st.one_of(st.text(max_size=30), st.from_regex(r"/[a-z]{1,12}(/[a-z{}]{1,12}){0,3}", fullmatch=True)),
    st.integers(100, 599),
)


@settings(max_examples=150, deadline=None)
@given(budget=st.integers(1, 60), requests=st.lists(_ANY_REQUEST, max_size=300))
def test_no_input_takes_a_family_past_its_budget(budget, requests):
    """Random tiers, methods, routes and codes, any budget: never more series than the budget, every
    fold counted, and what fits stays exact."""
    family = MetricSpec("clary_test_requests_total", Kind.COUNTER, "Test.", (TIER, METHOD, ROUTE, CODE), budget=budget)
    registry = CollectorRegistry()
    guard = LabelGuard(Counter("ovf", "Overflow.", ["metric", "label"], registry=registry))
    out = [guard.values(family, raw) for raw in requests]
    assert len(set(out)) <= budget
    assert guard.series(family) == len(set(out))
    normalised = [tuple(guard.value(label, v) for label, v in zip(family.labels, raw)) for raw in requests]
    changed = sum(a != b for n, o in zip(normalised, out) for a, b in zip(n, o))
    counted = sum(s.value for f in registry.collect() for s in f.samples if s.name == "ovf_total")
    assert counted == changed
    if len(set(normalised)) <= guard.exact_limit(family):
        assert out == normalised
