"""The catalog follows Prometheus naming conventions and the design contract."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.catalog import CATALOG, BY_NAME, Kind, spec
from exporter.instrument.metrics import CatalogMetrics

NAME = re.compile(r"^clary_[a-z][a-z0-9_]*[a-z0-9]$")
LABEL = re.compile(r"^[a-z][a-z0-9_]*$")
UNIT_SUFFIXES = ("_seconds", "_bytes", "_ratio", "_celsius", "_watts", "_total")
# A copy of ../shared/design/metrics.md, kept in the repo so CI (a lone clone) has it.
DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design" / "metrics.md"


@pytest.mark.parametrize("s", CATALOG, ids=lambda s: s.name)
def test_names_and_labels_follow_conventions(s):
    assert NAME.match(s.name)
    assert s.help and not s.help[0].islower() and s.help.endswith(".")
    assert (s.kind is Kind.COUNTER) == s.name.endswith("_total"), "_total exactly on counters"
    assert not re.search(r"_(milliseconds|ms|kilobytes|percent|minutes)(_|$)", s.name), "base units only"
    assert len(set(s.label_names)) == len(s.label_names)
    for label in s.label_names:
        assert LABEL.match(label) and not label.startswith("__")
        assert label not in {"user", "user_id", "api_key", "email", "path", "url"}, "no identifying labels"
    if s.kind is Kind.HISTOGRAM:
        assert s.buckets and list(s.buckets) == sorted(set(s.buckets))
        assert "le" not in s.label_names


def test_contract_families_from_design_doc_all_declared():
    """Every family named in shared/design/metrics.md exists with the same labels."""
    text = DESIGN.read_text()
    declared = dict(re.findall(r"`(clary_[a-z0-9_]+)(?:\{([a-z_,]+)\})?`", text))
    assert len(declared) >= 40
    for name, labels in declared.items():
        assert name in BY_NAME, f"{name} from the design doc is missing"
        if labels:
            assert spec(name).label_names == tuple(labels.split(",")), name


def test_contract_buckets_match_design():
    assert spec("clary_http_request_duration_seconds").buckets == (
        0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
    assert spec("clary_document_processing_duration_seconds").buckets == (
        0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
    assert spec("clary_features_per_document").buckets == (1, 2, 3, 5, 8, 13, 21)
    assert spec("clary_feedback_rating").buckets == (1, 2, 3, 4, 5)


def test_registry_is_passed_in_not_global():
    a, b = CollectorRegistry(), CollectorRegistry()
    CatalogMetrics(a).child("clary_feedback_urgent_total", "lite").inc()
    CatalogMetrics(b)
    assert a.get_sample_value("clary_feedback_urgent_total", {"tier": "lite"}) == 1
    assert b.get_sample_value("clary_feedback_urgent_total", {"tier": "lite"}) == 0


def test_fixed_children_exist_at_zero():
    registry = CollectorRegistry()
    CatalogMetrics(registry)
    text = generate_latest(registry).decode()
    for tier in ("lite", "standard", "professional"):
        assert f'clary_feedback_urgent_total{{tier="{tier}"}} 0.0' in text
        for result in ("valid", "invalid", "expired", "revoked", "error"):
            assert registry.get_sample_value(
                "clary_license_validations_total", {"tier": tier, "result": result}) == 0
    assert registry.get_sample_value(
        "clary_exporter_label_overflow_total", {"metric": "clary_http_requests_total", "label": "route"}) == 0
