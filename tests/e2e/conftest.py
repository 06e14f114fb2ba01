"""Fixtures of the end-to-end tests. ``demo_stack`` is the real thing: the demo
exporter as a subprocess on a free loopback port, scraped every second by a
real Prometheus binary that loads the bundle's recording rules the panels
read. Session-scoped, so every end-to-end test (catalog, dashboards,
scale profile) shares one stack.

Every test here is marked ``e2e`` (``-m "not e2e"`` leaves them out).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import support
from tests.e2e.dashboard_probe import dashboard_rules

# Demo traffic stops by itself: long enough for the whole session, bounded anyway.
DEMO_DURATION_SECONDS = 600

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@dataclass
class DemoStack:
    exporter_url: str
    exporter_target: str
    prometheus: support.Prometheus


@pytest.fixture(scope="session")
def demo_started(tmp_path_factory):
    """The demo stack's processes, started and answering, but not yet scraped:
    for fixtures that only need the exporter's address, so that their own
    Prometheus' first ~5 s (see tests/support.py) overlap this one's."""
    port = support.free_port()
    log_path = tmp_path_factory.mktemp("demo") / "exporter.log"
    target = f"{support.LOOPBACK}:{port}"
    # Prometheus first: its ~5 s until the first scrape overlaps the exporter's start-up.
    rules = dashboard_rules(tmp_path_factory.mktemp("rules"))
    with support.prometheus([target], rule_files=rules) as prom, \
            support.exporter(port, "--demo", "--demo-duration", str(DEMO_DURATION_SECONDS), log_path=log_path):
        yield DemoStack(f"http://{target}", target, prom)


@pytest.fixture(scope="session")
def demo_stack(demo_started):
    """The demo exporter, scraped at least once by its Prometheus."""
    prom = demo_started.prometheus
    support.wait_until(lambda: prom.query('up{job="clary-exporter"} == 1'), timeout=30, interval=0.1,
                       what="first scrape")
    return demo_started
