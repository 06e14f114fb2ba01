"""Every panel query of every dashboard against what the events API accepts at its edges.

A fresh exporter is fed through ``POST /api/v1/events`` with the inputs that
used to give absurd panels: a license expiring at 0 (unknown), one expired
days ago and one in 1970, one at the schema's last expiry (1e11); a limit of
0 and usage twice the limit; every duration at the schema's bounds (0 and 7
days); token counts and gauges at their maximum; 429 answers with the quota
refusals they stand for. A real Prometheus scrapes it every second and
evaluates the bundle's rules. Then every panel's PromQL (Grafana variables
substituted) must return finite, plausible values: no NaN or ±Inf, nothing
negative, days and seconds within what was sent, ratios within 0..1 (usage
against a limit within what was sent), and the healthy tier's 5xx ratios
read 0, not "no data". Heatmap cells add up to the true count, and the
model-load panel still reads the true load time minutes after the load.
"""

from __future__ import annotations

import time

import pytest

from dashboards.build import all_dashboards
from dashboards.queries import substitute
from exporter.ingest.schemas import MAX_SECONDS
from exporter.instrument.hashing import Hasher
from tests import support
from tests.e2e import dashboard_probe as probe

pytestmark = pytest.mark.e2e

NOW = time.time()
DAY = 86400.0
LAST_EXPIRY = 1e11  # the schema's bound on expires_at
LICENSES = {  # key: (tier, expires_at, usage, limits)
    "edge-expiry-zero": ("lite", 0, {"documents": 5}, {"documents": 0}),
    "edge-expired": ("lite", NOW - 3 * DAY, {"api_calls": 2000}, {"api_calls": 1000}),
    "edge-1970": ("standard", 1, {"documents": 0}, {"documents": 100}),
    "edge-far": ("professional", LAST_EXPIRY, {"features": 0}, {"features": 0}),
    "edge-fine": ("standard", NOW + 40 * DAY, {"documents": 10}, {"documents": 100}),
}
MAX_COMPLIANCE = 2.0  # 2000 of 1000 api_calls
ROUNDS = 6


def license_id(key: str) -> str:
    return Hasher(probe.HMAC_SECRET).license_id(key)


def edge_events() -> list[dict]:
    """One round: every event type, at the schema's edges; the standard tier is healthy (no 5xx, no failure)."""
    events: list[dict] = [
        {"type": "license_status", "tier": tier, "license_key": key, "expires_at": expires, "usage": usage,
         "limits": limits}
        for key, (tier, expires, usage, limits) in LICENSES.items()
    ]
    for tier, codes in (("lite", (200, 500, 429)), ("standard", (200, 201)), ("professional", (200, 503))):
        for code, duration in zip(codes, (0.0, MAX_SECONDS, 0.5)):
            events.append({"type": "api_call", "tier": tier, "method": "POST", "route": "/api/v1/documents",
                           "code": code, "duration_seconds": duration})
    events.append({"type": "quota_exceeded", "tier": "lite", "limit": "api_calls"})  # the 429 above
    for tier, outcome in (("lite", "success"), ("standard", "success"), ("professional", "failure")):
        for duration in (0.0, MAX_SECONDS):
            events += [
                {"type": "document_processed", "tier": tier, "doc_type": "invoice", "outcome": outcome,
                 "duration_seconds": duration, "features": ["ocr", "summarization"]},
                {"type": "inference", "tier": tier, "model": "layout-base", "outcome": outcome,
                 "duration_seconds": duration},
                {"type": "llm_call", "tier": tier, "provider": "openai", "model": "gpt-4o", "outcome": outcome,
                 "duration_seconds": duration, "time_to_first_token_seconds": duration,
                 "input_tokens": 10**12, "output_tokens": 0},
                {"type": "license_validation", "tier": tier, "result": "valid", "duration_seconds": duration,
                 "license_key": "edge-fine"},
                {"type": "session", "tier": tier, "duration_seconds": duration, "user_id": f"edge-user-{tier}"},
            ]
        events += [
            {"type": "feature_blocked", "tier": tier, "feature": "translation"},
            {"type": "template_used", "tier": tier, "kind": "custom"},
            {"type": "user_action", "tier": tier, "action": "upload", "user_id": f"edge-user-{tier}"},
        ]
    events += [
        {"type": "model_load", "model": "layout-base", "duration_seconds": MAX_SECONDS, "memory_bytes": 1e15},
        {"type": "model_load", "model": "ocr-fast", "duration_seconds": 0.0, "memory_bytes": 0},
        {"type": "queue_length", "queue": "ocr", "length": 1e15},
        {"type": "queue_length", "queue": "ingest", "length": 0},
    ]
    return events


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    with probe.stack(tmp_path_factory.mktemp("edges")) as s:
        base = s.exporter_urls[0]
        probe.send(base, edge_events())  # every series exists before the counted rounds
        for _ in range(ROUNDS):
            time.sleep(1.2)  # at least one scrape between rounds: rates see each one
            probe.send(base, edge_events())
        prom = s.prometheus
        support.wait_until(
            lambda: prom.query('license_tier:clary_license_expiry_timestamp_seconds:max{tier="lite"}')
            and prom.query('tier:clary_http_errors_per_request:ratio_rate5m{tier="standard"}'),
            timeout=20, interval=0.5, what="the recording rules over the edge inputs")
        time.sleep(1.5)  # the last round scraped and evaluated
        yield s


@pytest.fixture(scope="module")
def results(edge):
    """(query, result) for every panel query, variables substituted (1m rate window, 5m range)."""
    at = time.time()
    return [(q, edge.prometheus.query(probe.substituted(q), at)) for q in probe.panel_queries()]


def bounds(query: probe.PanelQuery) -> tuple[float, float]:
    """The plausible range of a panel's values, from its unit and what was sent."""
    if query.unit == "d":
        return 0, (LAST_EXPIRY - NOW) / DAY + 1
    if query.unit == "s":
        return 0, MAX_SECONDS
    if "budget" in query.title.lower():  # an error budget overspent is negative, and says so
        return float("-inf"), float("inf")
    if query.unit == "percentunit":
        limits = any(word in query.title.lower() for word in ("compliance", "allowance", "against limits"))
        return 0, MAX_COMPLIANCE if limits else 1
    return 0, float("inf")


def test_every_panel_returns_finite_plausible_values(results):
    assert len(results) > 300
    wrong = []
    for query, result in results:
        low, high = bounds(query)
        for value in probe.values(result):
            if not (probe.finite(value) and low <= value <= high):
                wrong.append(f"{query.uid} / {query.title} ({query.unit}): {value} from {query.expr}")
    assert not wrong, "\n".join(wrong)


def _result(results, uid: str, title: str, legend: str | None = None) -> list[dict]:
    found = [r for q, r in results if q.uid == uid and q.title == title and (legend is None or q.legend == legend)]
    assert len(found) == 1, (uid, title, legend, len(found))
    return found[0]


def test_a_healthy_tier_reads_0_percent_5xx_not_no_data(results):
    ratios = [(q, r) for q, r in results if "5xx" in q.title and q.unit == "percentunit"
              and q.uid in ("clary-standard-usage", "clary-standard-performance", "clary-overview")]
    assert len(ratios) >= 4
    for query, result in ratios:
        standard = [r for r in result if r["metric"].get("tier", "standard") == "standard"]
        assert probe.values(standard) == [0.0], f"{query.uid} / {query.title}: {result}"


def test_license_edges_read_sanely(results):
    table = {r["metric"]["license"]: float(r["value"][1])
             for r in _result(results, "clary-lite-license", "Days to expiry per license")}
    # expires_at 0 is unknown, not 20,000 days ago; an expired license reads 0 days.
    assert table == {license_id("edge-expired"): 0.0}
    soonest = {r["metric"]["tier"]: float(r["value"][1])
               for r in _result(results, "clary-overview", "Soonest license expiry")}
    assert soonest["lite"] == 0 and soonest["standard"] == 0  # 1970: expired
    assert (LAST_EXPIRY - NOW) / DAY - 1 < soonest["professional"] < (LAST_EXPIRY - NOW) / DAY + 1
    # A limit of 0 gives no ratio: highest compliance is the 200 % license, not +Inf.
    assert probe.values(_result(results, "clary-lite-license", "Highest compliance")) == [MAX_COMPLIANCE]
    assert probe.values(_result(results, "clary-professional-license", "Highest compliance")) == []
    # ... and only that license is "at a limit".
    assert probe.values(_result(results, "clary-lite-usage", "Customers at a limit")) == [1.0]


def test_refused_calls_count_once(results):
    served = probe.values(_result(results, "clary-lite-license", "API calls served vs refused by quota", "served"))
    refused = probe.values(_result(results, "clary-lite-license", "API calls served vs refused by quota",
                                   "refused (api_calls quota)"))
    total = probe.values(_result(results, "clary-lite-performance", "Request rate"))
    # Each round: 200, 500 and a 429 that is also a quota refusal. Served + refused = every call, once
    # (the quota counter may have seen one round more: it exists from the start, the 429 series from its first).
    assert served[0] == pytest.approx(2 / 3 * total[0], rel=0.02)
    assert served[0] + refused[0] == pytest.approx(total[0], rel=0.1)


def test_model_load_times_are_true_and_stay(edge):
    """The latest load reads its true time minutes later, when a quantile of the histogram's rate is long empty."""
    query = next(q for q in probe.panel_queries()
                 if q.uid == "clary-lite-performance" and q.title == "Latest model load time")
    later = time.time() + 180
    loads = {r["metric"]["model"]: float(r["value"][1])
             for r in edge.prometheus.query(probe.substituted(query), later)}
    assert loads == {"layout-base": MAX_SECONDS, "ocr-fast": 0.0}
    old = "histogram_quantile(0.95, sum by (le, model) (rate(clary_model_load_duration_seconds_bucket[1m])))"
    assert not [v for v in probe.values(edge.prometheus.query(old, later)) if probe.finite(v)]


def test_the_gpu_collector_of_a_host_without_gpu_is_neutral(results):
    states = {r["metric"]["collector"]: float(r["value"][1])
              for r in _result(results, "clary-lite-performance", "Collectors")}
    assert states["system"] == 1
    assert states["gpu"] == (1 if support.gpu_present() else 2)  # 2: NO GPU (blue), not DOWN (red)


def test_the_alert_annotation_queries_run(edge):
    for built in all_dashboards():
        for annotation in built.dashboard.annotations.list:
            if "expr" in annotation:
                edge.prometheus.query(annotation["expr"])  # raises on a parse error


def test_heatmap_cells_add_up_to_the_true_count(edge):
    """Cells one step wide, from a rate over a window ten steps long: each request is counted once.

    (A step equal to the scrape interval: each increase then falls in the same number of windows
    whatever the phase.)
    """
    prom, base = edge.prometheus, edge.exporter_urls[0]
    count = 'sum(clary_http_request_duration_seconds_count{tier="professional"})'
    window, step = 10, 1
    time.sleep(window + 1)  # no earlier request in the first cells' windows
    t0 = time.time()
    before = probe.values(prom.query(count, t0))[0]
    calls = [{"type": "api_call", "tier": "professional", "method": "GET", "route": "/api/v1/documents",
              "code": 200, "duration_seconds": 0.05}] * 25
    for _ in range(4):
        probe.send(base, calls)
        time.sleep(1.1)
    time.sleep(window + 2)
    t1 = time.time()
    sent = probe.values(prom.query(count, t1))[0] - before
    assert sent == 100
    heatmap = next(q for q in probe.panel_queries()
                   if q.uid == "clary-professional-performance" and q.title == "Latency distribution")
    expr = substitute(heatmap.expr, f"{window}s", interval=f"{step}s")

    def total(e: str) -> float:
        series = {r["metric"]["le"]: r["values"] for r in probe.query_range(prom, e, t0, t1, step)}
        return sum(float(v) for _, v in series["+Inf"])

    # rate() sees an increase only in windows holding samples on both sides of it, and extrapolates: the sum
    # lands within some 15 % of the count (measured 0.84 to 0.87), the old query's about ten times it.
    assert 0.7 * sent <= total(expr) <= 1.3 * sent
    # The old query, increase() over the rate window at each step, counts each request about window/step times.
    old = f'sum by (le) (increase(clary_http_request_duration_seconds_bucket{{tier="professional"}}[{window}s]))'
    assert total(old) > 5 * sent
