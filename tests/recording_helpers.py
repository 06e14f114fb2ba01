"""Helpers shared by the recording tests (tests/ingest/, tests/instrument/): recorders, samples, threads.

Every shortcut of the recording path (bulk ``record_all``, batches summed in
per-thread tables, the event backlog) is checked against the slow path it
replaces; these are the pieces both sides use.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client import values as prometheus_values

from exporter.instrument.hashing import Hasher
from exporter.instrument.recorder import Recorder

SECRET = "ingest-recording-secret-0123456789"
HASHER = Hasher(SECRET)
OPTED_OUT_USER = "u-opted-out"  # opted out in the recorder (is_opted_out hook)
REFUSED_USER = "u-refused"  # refused by the users tracker (track returns False)


def new_recorder(**kwargs) -> tuple[CollectorRegistry, Recorder]:
    registry = CollectorRegistry()
    opted = HASHER.digest(OPTED_OUT_USER)
    kwargs.setdefault("is_opted_out", lambda hashed: hashed == opted)
    return registry, Recorder(registry, HASHER, **kwargs)


def multiprocess_mode(patch: pytest.MonkeyPatch) -> None:
    """prometheus_client's multiprocess mode, as far as the recorder can tell (values still in memory).

    A private seam: ``ValueClass._multiprocess`` is the flag prometheus_client sets in that mode, and
    what ``exporter.instrument._compat.multiprocess_mode`` reads.
    """
    patch.setattr(prometheus_values.ValueClass, "_multiprocess", True)


def no_deferral_recorder(monkeypatch: pytest.MonkeyPatch) -> tuple[CollectorRegistry, Recorder]:
    """A recorder built as in multiprocess mode: batches record counters and histograms directly."""
    with monkeypatch.context() as patch:
        multiprocess_mode(patch)
        registry, rec = new_recorder()
    assert rec.before_collect(lambda: None) is False  # nothing runs before a scrape: nothing can be deferred
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


def child_samples(rec: Recorder, name: str, *labels) -> dict[str, float]:
    """What the metric object for ``labels`` holds right now: {sample name: value}, ``le`` in bucket names.

    Read with the child's own ``collect()``, which runs no collect hook (those belong to the family): so,
    unlike a registry scrape, nothing held back in per-thread totals or in the backlog is folded in first.
    """
    child = rec.metrics.child(name, *labels)
    return {s.name + (f'{{le="{s.labels["le"]}"}}' if "le" in s.labels else ""): s.value
            for metric in child.collect() for s in metric.samples if not s.name.endswith("_created")}


def child_value(rec: Recorder, name: str, *labels) -> float:
    """A counter's or gauge's value in its metric object right now (no fold; see ``child_samples``)."""
    return child_samples(rec, name, *labels)[name]


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
