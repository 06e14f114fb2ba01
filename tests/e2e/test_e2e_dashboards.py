"""Every dashboard panel's PromQL against a real Prometheus that scraped the demo.

There is no Grafana server here, so this is how we know each panel shows
data: the exact expressions provisioned (Grafana variables substituted) must
parse and return series once the demo has run for a few seconds.
"""

from __future__ import annotations

import re
import time

import pytest

from dashboards.queries import all_queries, substitute
from exporter.catalog import CATALOG, HARDWARE_GROUPS
from tests import support

pytestmark = pytest.mark.e2e

HARDWARE_METRICS = {s.name for s in CATALOG if s.group in HARDWARE_GROUPS}


def _needs_hardware(expr: str) -> bool:
    return any(name in HARDWARE_METRICS for name in re.findall(r"clary_[a-z0-9_]+", expr))


# A division is `num / (den > 0)` and a quantile `histogram_quantile(...) >= 0` (exporter.promql): "no data"
# instead of NaN when nothing happened in the window (no professional bug report in the last 30 s).
_GUARDS = re.compile(r" > 0(?=\))|(?<=\)) >= 0(?![\d.])")


def _nothing_happened(prometheus, expr: str) -> bool:
    """Whether ``expr`` is empty only because of its NaN guards: unguarded, it returns (NaN) samples."""
    unguarded = _GUARDS.sub("", expr)
    return unguarded != expr and bool(prometheus.query(unguarded))


def _queries():
    return [(uid, title, substitute(expr, rate_interval="30s", range_="10m")) for uid, title, expr in all_queries()]


def test_every_panel_query_returns_data_from_the_demo(demo_stack):
    queries = _queries()
    assert len(queries) > 100
    gpu = support.gpu_present()

    def empty():
        missing = []
        for uid, title, expr in queries:
            prometheus = demo_stack.prometheus
            if (not prometheus.query(expr) and (gpu or not _needs_hardware(expr))
                    and not _nothing_happened(prometheus, expr)):
                missing.append(f"{uid} / {title}: {expr}")
        return missing

    # Rates need two scrapes inside the window; give the demo a little time.
    deadline = time.monotonic() + 45
    missing = empty()
    while missing and time.monotonic() < deadline:
        time.sleep(2)
        missing = empty()
    assert missing == []


def test_hardware_panels_still_parse_without_a_gpu(demo_stack):
    hardware = [q for q in _queries() if _needs_hardware(q[2])]
    assert hardware, "the performance dashboards have GPU panels"
    for _, _, expr in hardware:
        demo_stack.prometheus.query(expr)  # raises on a parse or execution error
