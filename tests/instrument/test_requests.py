"""``RequestMetrics`` driven directly: per-thread tables under concurrent scrapes, odd statuses, exemplar pacing."""

from __future__ import annotations

import threading
import time

from exporter.instrument import requests as httpmetrics
from exporter.instrument.identity import ANONYMOUS
from exporter.instrument.requests import RequestMetrics
from tests.instrument.http_helpers import TRACE_ID, in_flight, openmetrics, requests


async def test_threads_writing_while_a_scrape_folds_lose_nothing(rec, registry):
    """Each thread counts into its own table; scrapes on another thread read them concurrently."""
    metrics = RequestMetrics.of(rec)
    n, threads = 20_000, 4
    stop = threading.Event()

    def work():
        for _ in range(n):
            metrics.finished(metrics.started(), ANONYMOUS, "GET", "/t", 200)

    def scrape():
        while not stop.is_set():
            requests(registry)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    scraper.join()
    assert requests(registry) == {("unknown", "GET", "/t", "200"): n * threads}
    assert registry.get_sample_value(
        "clary_http_request_duration_seconds_count", {"tier": "unknown", "method": "GET", "route": "/t"}) == n * threads
    assert in_flight(registry) == 0


async def test_status_outside_the_valid_range_counts_as_500(rec, registry):
    metrics = RequestMetrics.of(rec)
    for deferred in (True, False):
        metrics.deferred = deferred
        metrics.finished(metrics.started(), ANONYMOUS, "GET", "/odd", 999)
    assert requests(registry) == {("unknown", "GET", "/odd", "500"): 2}


async def test_a_bucket_exemplar_is_replaced_at_most_every_interval(rec, registry, monkeypatch):
    metrics = RequestMetrics.of(rec)
    other = "0af7651916cd43dd8448eb211c80319c"

    def traced(trace: str) -> None:  # ~30 ms: the 0.05 bucket, far from its edges
        metrics.leave(metrics.enter(), ANONYMOUS, "GET", "/x", 200, time.perf_counter() - 0.03,
                      f"00-{trace}-00f067aa0ba902b7-01")

    traced(TRACE_ID)
    traced(other)
    text = openmetrics(registry)
    assert text.count(f'trace_id="{TRACE_ID}"') == 1 and other not in text  # within the interval: kept
    assert 'le="0.05"' in next(line for line in text.splitlines() if TRACE_ID in line)
    monkeypatch.setattr(httpmetrics, "EXEMPLAR_INTERVAL", 0.0)
    traced(other)
    text = openmetrics(registry)
    assert text.count(f'trace_id="{other}"') == 1 and TRACE_ID not in text  # replaced by the latest
    assert requests(registry) == {("unknown", "GET", "/x", "200"): 3}
