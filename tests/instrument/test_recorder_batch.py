"""``Recorder.batch()`` and the bulk helpers (``count_each``, ``add_each``, ``set_each``, ``observe_each``).

A batch has the recorder's methods and label checks at call time; counters
and histograms are summed in per-thread tables (tests/instrument/test_deferred.py),
gauges are set at ``commit()``. The bulk helpers give the same samples on the
recorder, on a batch, and on a batch without deferral (multiprocess mode).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.instrument.recorder import Recorder
from exporter.labels import LabelRejected
from tests.api_helpers import value
from tests.recording_helpers import (assert_same_samples, child_value, new_recorder, no_deferral_recorder, nonzero,
                                     samples)

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
    assert_same_samples(samples(registry), samples(untouched_registry))  # nothing recorded, nothing to fold
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


# --- bulk helpers: the recorder, a batch, a batch without deferral --------------------------------------

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
