"""Two exporter replicas behind one Prometheus: the dashboards do not add up what both report.

Both replicas get the same reports, as they do behind a load balancer that
spreads one client's traffic: a queue 40 long, the same 100 users, the same
licenses. The panels that show shared state (queue length, license expiry
and compliance) and per-replica distinct counts (active users, active
licenses) must read 40, about 100 and one license each, not twice that.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e import dashboard_probe as probe

pytestmark = pytest.mark.e2e

USERS = 100
LICENSE_KEYS = [f"replica-license-{i}" for i in range(5)]


def reports() -> list[dict]:
    events: list[dict] = [{"type": "queue_length", "queue": "ocr", "length": 40}]
    events += [{"type": "user_action", "tier": "standard", "action": "upload", "user_id": f"replica-user-{i}"}
               for i in range(USERS)]
    events += [{"type": "license_validation", "tier": "standard", "result": "valid", "license_key": key}
               for key in LICENSE_KEYS]
    events += [{"type": "license_status", "tier": "standard", "license_key": key, "expires_at": time.time() + 10 * 86400,
                "usage": {"documents": 50}, "limits": {"documents": 100}} for key in LICENSE_KEYS]
    return events


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    with probe.stack(tmp_path_factory.mktemp("replicas"), replicas=2) as s:
        for base in s.exporter_urls:
            probe.send(base, reports())
        prom = s.prometheus
        support_query = 'count(clary_queue_length{queue="ocr"} == 40) == 2'
        deadline = time.monotonic() + 20
        while not (prom.query(support_query)
                   and prom.query('count(license_tier:clary_license_expiry_timestamp_seconds:max) == 5')):
            assert time.monotonic() < deadline, "both replicas' reports never reached Prometheus"
            time.sleep(0.5)
        assert len(prom.query('clary_active_users{tier="standard",window="5m"}')) == 2  # one per replica
        yield {(q.uid, q.title, q.legend): prom.query(probe.substituted(q)) for q in probe.panel_queries()}


def one(results, uid: str, title: str, legend: str, **labels: str) -> float:
    found = [float(r["value"][1]) for r in results[uid, title, legend]
             if all(r["metric"].get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (uid, title, legend, results[uid, title, legend])
    return found[0]


def test_a_shared_queue_is_not_doubled(results):
    assert one(results, "clary-standard-performance", "In-flight requests and queue length", "queue {{queue}}",
               queue="ocr") == 40
    assert one(results, "clary-overview", "In flight / queued", "queued") == 40


def test_distinct_counts_are_not_added_across_replicas(results):
    users = one(results, "clary-standard-usage", "Active users", "{{window}}", window="24h")
    assert 0.9 * USERS <= users <= 1.1 * USERS  # a HyperLogLog estimate of 100, not 200
    assert 0.9 * USERS <= one(results, "clary-overview", "Active users (24h)", "{{tier}}", tier="standard") <= 1.1 * USERS
    assert one(results, "clary-standard-license", "Active licenses", "") == len(LICENSE_KEYS)
    assert one(results, "clary-overview", "Active licenses", "{{tier}}", tier="standard") == len(LICENSE_KEYS)


def test_license_state_is_read_once(results):
    days = one(results, "clary-standard-license", "Soonest expiry", "")
    assert 9.9 < days < 10.1
    assert one(results, "clary-standard-license", "Highest compliance", "") == 0.5
    rows = results["clary-standard-license", "Days to expiry per license", ""]
    assert len(rows) == len(LICENSE_KEYS)
