"""The exporter app via aiohttp_client: negotiation, gzip, errors, health."""

from __future__ import annotations

import asyncio
import gzip
import threading

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from exporter import demo
from exporter import __version__
from exporter.config import Config
from exporter.server.app import create_app

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def _config(data_dir, **kw) -> Config:
    return Config(hmac_secret="s" * 32, collectors={"system": True, "gpu": False}, data_dir=data_dir, **kw)


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
async def client(aiohttp_client, registry, tmp_path):
    return await aiohttp_client(create_app(_config(tmp_path), registry))


async def test_metrics_text_format_by_default(client):
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    assert families["clary_exporter_build_info"].samples[0].labels == {"version": __version__}
    assert families["clary_exporter_build_info"].samples[0].value == 1
    up = {s.labels["collector"]: s.value for s in families["clary_exporter_collector_up"].samples}
    assert up == {"system": 1.0}


async def test_metrics_openmetrics_when_asked(client):
    resp = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    body = await resp.text()
    assert body.endswith("# EOF\n")
    body, negative = _without_negative_bucket_histograms(body)
    names = {f.name for f in parse_openmetrics(body)}
    assert "clary_http_requests" in names  # OpenMetrics counter family names drop _total
    assert "clary_feedback_sentiment" in negative


def _without_negative_bucket_histograms(body: str) -> tuple[str, dict[str, list[str]]]:
    """The exposition less the histograms with negative buckets, which are checked here instead.

    OpenMetrics 1.0 forbids ``_sum`` on a histogram with negative buckets (it would
    not be a counter) and client_python's writer omits it, but client_python's own
    parser then insists on ``_sum`` whenever ``_count`` is there (OpenMetrics issue
    229). Those families must have buckets and a ``_count`` equal to ``+Inf``, no ``_sum``.
    """
    families: dict[str, list[str]] = {}
    current = None
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            current = line.split()[2] if line.split()[3] == "histogram" else None
        if current:
            families.setdefault(current, []).append(line)
    negative = {name: lines for name, lines in families.items()
                if any(line.startswith(f'{name}_bucket{{') and 'le="-' in line for line in lines)}
    for name, lines in negative.items():
        assert not any(line.startswith(f"{name}_sum") for line in lines)
        counts = [line for line in lines if line.startswith(f"{name}_count")]
        infs = [line for line in lines if line.startswith(f"{name}_bucket") and 'le="+Inf"' in line]
        assert counts and len(counts) == len(infs)
        assert sorted(c.rsplit(" ", 1)[1] for c in counts) == sorted(i.rsplit(" ", 1)[1] for i in infs)
    def checked_here(line: str) -> bool:
        if line.startswith("# "):  # HELP / TYPE / UNIT of a family, or EOF
            return (line.split()[2:3] or [""])[0] in negative
        return line.split("{")[0].split(" ")[0].rsplit("_", 1)[0] in negative

    kept = [line for line in body.splitlines() if not checked_here(line)]
    return "\n".join(kept) + "\n", negative


async def test_metrics_gzip_when_accepted(client):
    resp = await client.get("/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert resp.headers["Content-Encoding"] == "gzip"
    raw = await resp.read()
    text = gzip.decompress(raw).decode()
    assert "clary_exporter_build_info" in text and len(raw) < len(text) / 3
    plain = await client.get("/metrics", headers={"Accept-Encoding": "identity"}, auto_decompress=False)
    assert "Content-Encoding" not in plain.headers


async def test_health_and_readiness(client):
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 200 and (await resp.json()) == {"status": "ready"}


async def test_landing_page_links(client):
    resp = await client.get("/")
    body = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/html"
    assert 'href="metrics"' in body and __version__ in body


async def test_unknown_path_is_json_404(client):
    resp = await client.get("/nope")
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"


async def test_wrong_method_is_json_405(client):
    resp = await client.post("/metrics")
    assert resp.status == 405
    payload = await resp.json()
    assert payload["error"] == "method_not_allowed" and "GET" in payload["allowed"]
    assert "GET" in resp.headers["Allow"]


async def test_demo_api_mounted_only_in_demo_mode(aiohttp_client, tmp_path):
    plain = await aiohttp_client(create_app(_config(tmp_path), CollectorRegistry()))
    assert (await plain.get("/demo/api/v1/boom")).status == 404
    demo_app = await aiohttp_client(demo.create_app(_config(tmp_path, demo=True), CollectorRegistry()))
    resp = await demo_app.get("/demo/api/v1/boom", headers={"X-API-Key": "demo-lite-key"})
    assert resp.status == 500 and (await resp.json())["error"] == "internal_error"


class _BlockingCollector:
    """Holds the render thread until released, to prove the loop stays free."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()

    def collect(self):
        self.entered.set()
        assert self.release.wait(10)
        yield GaugeMetricFamily("clary_test_blocking", "Test.", value=1)


async def test_render_runs_off_the_event_loop(aiohttp_client, registry, tmp_path):
    blocker = _BlockingCollector()
    client = await aiohttp_client(create_app(_config(tmp_path), registry))
    registry.register(blocker)
    scrape = asyncio.create_task(client.get("/metrics"))
    assert await asyncio.to_thread(blocker.entered.wait, 10)
    # The render is stuck inside collect(); the loop still answers.
    health = await client.get("/healthz")
    assert health.status == 200 and not scrape.done()
    blocker.release.set()
    resp = await scrape
    assert resp.status == 200 and "clary_test_blocking 1.0" in await resp.text()


def test_demo_without_secret_uses_demo_secret_and_says_so(caplog):
    demo.create_app(Config(demo=True, collectors={"system": False, "gpu": False}), CollectorRegistry())
    assert any("demo HMAC secret" in r.getMessage() for r in caplog.records)


def test_service_mode_requires_a_secret():
    with pytest.raises(ValueError, match="HMAC secret is required"):
        create_app(Config(collectors={"system": False, "gpu": False}), CollectorRegistry())
