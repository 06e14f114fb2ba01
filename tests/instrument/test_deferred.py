"""``exporter.instrument.deferred``: counters and histograms summed in per-thread tables, folded in at scrape time.

A batch (``Recorder.batch()``) sums counters and histograms in plain
per-thread tables; a collect hook folds what changed since the last fold into
the metric objects just before the family is collected. Checked against the
direct path: same buckets as ``Histogram.observe``, every update made before
a scrape in it, exact totals under threads, bounded tables.
"""

from __future__ import annotations

import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import exporter.instrument.deferred
from exporter.catalog import spec
from exporter.instrument import _compat
from tests.api_helpers import value
from tests.recording_helpers import (assert_same_samples, child_samples, child_value, multiprocess_mode, new_recorder,
                                     race_with_scraper, samples)

def test_deferred_updates_are_available_with_in_memory_values():
    """This prometheus_client keeps values in memory with the histogram layout the fold writes into."""
    assert exporter.instrument.deferred.available() is True
    registry, rec = new_recorder()
    ran = []
    assert rec.before_collect(lambda: ran.append(1)) is True  # a collect hook is there to fold into
    rec.batch().feature_used("lite", "ocr")
    assert child_value(rec, "clary_feature_uses_total", "lite", "ocr", "success") == 0  # summed aside
    assert value(registry, "clary_feature_uses_total", tier="lite", feature="ocr", outcome="success") == 1
    assert ran


class _NoLayoutHistogram:
    """A histogram without the private ``_sum``/``_buckets`` the fold needs (another client version)."""

    def __init__(self, *args, **kwargs):
        self._upper_bounds = [1.0, math.inf]


@pytest.mark.parametrize("how", ["multiprocess", "other layout"])
def test_deferral_off_in_multiprocess_mode_or_another_layout(monkeypatch, how):
    """available() is False in multiprocess mode (values in files): batches then record straight in."""
    if how == "multiprocess":
        multiprocess_mode(monkeypatch)
    else:
        monkeypatch.setattr(_compat, "Histogram", _NoLayoutHistogram)
    assert exporter.instrument.deferred.available() is False
    registry, rec = new_recorder()
    assert rec.before_collect(lambda: None) is False
    batch = rec.batch()
    batch.feature_used("lite", "ocr")
    batch.inference("lite", "ocr-fast", "success", 0.5)
    assert child_value(rec, "clary_feature_uses_total", "lite", "ocr", "success") == 1  # no collect needed
    held = child_samples(rec, "clary_inference_duration_seconds", "lite", "ocr-fast")
    assert held["clary_inference_duration_seconds_sum"] == 0.5 and held["clary_inference_duration_seconds_count"] == 1


def test_deferred_values_reach_the_metric_objects_only_when_collected():
    """A batch's counters and histograms sit in the thread's table until a collect folds them in."""
    registry, rec = new_recorder()
    batch = rec.batch()
    for _ in range(3):
        batch.feature_used("lite", "ocr")
    batch.inference("lite", "ocr-fast", "success", 0.05)
    assert child_value(rec, "clary_feature_uses_total", "lite", "ocr", "success") == 0
    held = child_samples(rec, "clary_inference_duration_seconds", "lite", "ocr-fast")
    assert held and not any(held.values()), held  # sum, count and every bucket still 0
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
    # Private peek: which threads' tables are still held is memory only; the totals (public) are checked too.
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
    table = rec._deferred.table()  # private peek: the table's size is memory only (totals are checked publicly)
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
    table = rec._deferred.table()  # private peek: the table's size is memory only (totals are checked publicly)
    assert len(table.counters) + len(table.histograms) <= 3
    assert value(registry, f"{name}_count", model=m1) == 2
    assert value(registry, f"{name}_sum", model=m1) == 6.0
    for model, observed in ((m2, 2.0), (m3, 3.0), (m4, 4.0)):
        assert value(registry, f"{name}_count", model=model) == 1
        assert value(registry, f"{name}_sum", model=model) == observed
    assert value(registry, f"{name}_bucket", model=m1, le="5.0") == 2
    assert value(registry, f"{name}_bucket", model=m1, le="2.5") == 1


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
