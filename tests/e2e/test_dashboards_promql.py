"""Every dashboard query, run through a real Prometheus binary.

A Prometheus (Debian's 2.x, started by ``tests.support``: free loopback
port, temp TSDB, always stopped) scrapes a small synthetic target that
exposes every catalog family with every combination of its fixed label
values. Then each query of every panel (``dashboards.queries.all_queries``)
is sent to ``/api/v1/query``:

- it must parse and evaluate (``status == "success"``; a syntax error is a
  400, a vector-matching mistake a 422);
- it must return data: a wrong label value, a label lost in an aggregation
  before a division, or a misspelt ``by`` label shows up as an empty result.

The real demo exporter run is the lead's end-to-end test; this one only needs
the catalog, so it stays valid while the exporter changes.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

from dashboards import queries
from exporter.catalog import CATALOG, Kind
from exporter.promql import LICENSE_COMPLIANCE, LICENSE_EXPIRY
from tests import support
from tests.e2e.dashboard_probe import dashboard_rules

pytestmark = pytest.mark.e2e

# Values for labels whose set is open in the catalog.
OPEN_LABEL_VALUES = {
    "route": ("/api/v1/documents", "/api/v1/documents/{id}"),
    "code": ("200", "500"),
    "license": ("0a1b2c3d4e5f", "f5e4d3c2b1a0"),
    "interface": ("eth0",),
    "gpu": ("0",),
    "uuid": ("GPU-00000000",),
    "model_name": ("NVIDIA H100 80GB HBM3",),
    "driver_version": ("550.54.15",),
    "gpu_instance_id": ("1",),
    "compute_instance_id": ("0",),
    "mig_profile": ("1g.10gb",),
    "mig_uuid": ("MIG-00000000",),
    "collector": ("system", "gpu"),
    "metric": ("clary_documents_processed_total",),
    "label": ("doc_type",),
    "version": ("0.1.0",),
    "from_action": ("start", "login"),
    "to_action": ("login", "end"),
    "funnel": ("onboarding",),
    "group": ("0123456789abcdef",),
}
RATE_INTERVAL = "1m"
# Recorded series panels read (exporter.promql): the fixture waits until the rules have produced them.
RECORDED_READ = (LICENSE_EXPIRY, LICENSE_COMPLIANCE)


def _label_values(label) -> tuple[str, ...]:
    return label.values if label.values is not None else OPEN_LABEL_VALUES[label.name]


def _children(family) -> Iterator[tuple[str, ...]]:
    return itertools.product(*(_label_values(label) for label in family.labels))


def synthetic_registry() -> tuple[CollectorRegistry, callable]:
    """Every catalog family, every label combination; ``tick()`` moves the counters."""
    registry = CollectorRegistry()
    metrics = []
    now = time.time()
    for family in CATALOG:
        names = family.label_names
        if family.kind is Kind.COUNTER:
            metric = Counter(family.name, family.help, names, registry=registry)
        elif family.kind is Kind.GAUGE:
            metric = Gauge(family.name, family.help, names, registry=registry)
        else:
            metric = Histogram(family.name, family.help, names, buckets=family.buckets, registry=registry)
        metrics.append((family, metric))
        for i, values in enumerate(_children(family)):
            child = metric.labels(*values) if names else metric
            if family.kind is Kind.GAUGE:
                if family.name == "clary_license_expiry_timestamp_seconds":
                    child.set(now + 86400 * (10 + 20 * i))
                elif family.name == "clary_license_limit":
                    child.set(1000)
                elif family.name == "clary_license_usage":
                    child.set(700 + 100 * (i % 4))
                elif family.name.endswith("_ratio") or family.name == "clary_exporter_collector_up":
                    child.set(1 if family.name == "clary_exporter_collector_up" else 0.5)
                else:
                    child.set(1 + i % 7)

    def tick() -> None:
        for family, metric in metrics:
            if family.kind is Kind.GAUGE:
                continue
            for i, values in enumerate(_children(family)):
                child = metric.labels(*values) if family.label_names else metric
                if family.kind is Kind.COUNTER:
                    child.inc(1 + i % 3)
                else:
                    bounds = family.buckets
                    child.observe(bounds[i % len(bounds)] * 0.9)

    tick()
    return registry, tick


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    registry, tick = synthetic_registry()
    port = support.free_port()
    server, thread = start_http_server(port, addr=support.LOOPBACK, registry=registry)
    try:
        rules = dashboard_rules(tmp_path_factory.mktemp("rules"))  # panels read recorded series
        with support.prometheus([f"{support.LOOPBACK}:{port}"], rule_files=rules, scrape_interval="1s") as p:
            # Enough scrapes, with moving counters, for rate() over 1m to have points.
            def scraped_enough():
                tick()
                result = p.query('count_over_time(up{job="clary-exporter"}[1m])')
                return (result and float(result[0]["value"][1]) >= 4
                        and all(p.query(name) for name in RECORDED_READ))  # the rules ran on them too

            support.wait_until(scraped_enough, timeout=40, interval=1.0, what="four scrapes")
            yield p
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def results(prom) -> list[tuple[str, str, str, list | str]]:
    """(uid, title, expr, result list or error text) for every dashboard query."""
    at = time.time()
    out = []
    for uid, title, expr in queries.all_queries(RATE_INTERVAL, range_="1h"):
        try:
            out.append((uid, title, expr, prom.query(expr, at)))
        except AssertionError as exc:
            out.append((uid, title, expr, str(exc)))
    return out


def test_prometheus_rejects_a_bad_query(prom):
    """The harness itself can fail: a parse error is reported, not swallowed."""
    with pytest.raises(AssertionError, match="failed \\(400\\)"):
        prom.query("sum by (le) (rate(clary_http_request_duration_seconds_bucket[1m])")


def test_every_query_parses_and_evaluates(results):
    assert len(results) > 300
    failed = [f"{uid} / {title}: {res}" for uid, title, _, res in results if isinstance(res, str)]
    assert not failed, "\n".join(failed)


def test_every_query_returns_data(results):
    empty = [f"{uid} / {title}: {expr}" for uid, title, expr, res in results if res == []]
    assert not empty, "queries with no result on synthetic data:\n" + "\n".join(empty)
