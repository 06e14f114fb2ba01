"""Fixtures of the instrumentation tests: a fresh registry and a recorder on it."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from exporter.instrument.hashing import Hasher
from exporter.instrument.recorder import Recorder


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def rec(registry):
    return Recorder(registry, Hasher("instrument-test-secret-0123"))
