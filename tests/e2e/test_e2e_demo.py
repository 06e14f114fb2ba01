"""End to end: `clary-exporter --demo` as a subprocess, scraped by a real Prometheus."""

from __future__ import annotations

import subprocess

import pytest

from exporter.catalog import CATALOG, HARDWARE_GROUPS
from tests import support

pytestmark = pytest.mark.e2e


_gpu_present = support.gpu_present


# GPU families every NVIDIA device reports; the others depend on the board
# (ECC, retired pages or remapped rows, MIG...), and none exist without a GPU
# except the device count, which then reads 0.
_GPU_ALWAYS = {"clary_gpu_devices"}
_GPU_ON_EVERY_DEVICE = {"clary_gpu_info", "clary_gpu_memory_used_bytes", "clary_gpu_memory_total_bytes"}


def _expected_families() -> set[str]:
    gpu = _GPU_ALWAYS | (_GPU_ON_EVERY_DEVICE if _gpu_present() else set())
    return {s.name for s in CATALOG if s.group not in HARDWARE_GROUPS or s.name in gpu}


def _series_name(spec_name: str, kind: str) -> str:
    return f"{spec_name}_count" if kind == "histogram" else spec_name


def test_every_catalog_family_has_series_in_prometheus(demo_stack):
    """Within 30 s of start every family is visible through Prometheus' API."""
    wanted = {_series_name(s.name, s.kind.value): s.name for s in CATALOG if s.name in _expected_families()}

    def missing():
        found = {r["metric"]["__name__"] for r in demo_stack.prometheus.query('count by (__name__) ({__name__=~"clary_.+"})')}
        return sorted(set(wanted) - found)

    support.wait_until(lambda: not missing(), timeout=30, what="all catalog families")
    assert missing() == []


def test_demo_traffic_reaches_every_tier(demo_stack):
    prom = demo_stack.prometheus

    def tiers():
        rows = prom.query("sum by (tier) (clary_http_requests_total)")
        return {r["metric"]["tier"]: float(r["value"][1]) for r in rows}

    found = support.wait_until(lambda: (t := tiers()) and {"lite", "standard", "professional"} <= set(t) and t,
                               timeout=30, what="traffic for all tiers")
    assert all(found[t] > 0 for t in ("lite", "standard", "professional"))
    # The demo's /boom route raised and was counted as an unhandled error.
    errors = prom.query('sum(clary_errors_total{error_type="RuntimeError", route="/demo/api/v1/boom"})')
    assert float(errors[0]["value"][1]) >= 3
    # Professional-only cloud LLM traffic carries tokens in both directions.
    tokens = prom.query('sum by (direction) (clary_llm_tokens_total{tier="professional"})')
    assert {r["metric"]["direction"] for r in tokens} == {"input", "output"}
    assert prom.query('clary_llm_tokens_total{tier="lite"} > 0') == []


def test_build_info_and_collector_health(demo_stack):
    prom = demo_stack.prometheus
    build = prom.query("clary_exporter_build_info")
    assert [float(r["value"][1]) for r in build] == [1.0]
    up = {r["metric"]["collector"]: float(r["value"][1]) for r in prom.query("clary_exporter_collector_up")}
    assert up["system"] == 1.0
    assert up["gpu"] == 1.0  # a host without a GPU is not a failing collector
    devices = prom.query("clary_gpu_devices")
    assert len(devices) == 1 and (float(devices[0]["value"][1]) > 0) == _gpu_present()


def test_live_exposition_passes_promtool(demo_stack):
    status, body = support.http_get(f"{demo_stack.exporter_url}/metrics")
    assert status == 200
    result = subprocess.run([support.binary("promtool"), "check", "metrics"], input=body,
                            capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == b"" and result.stderr.strip() == b""
