"""Fixtures of the instrumentation tests: a fresh registry, a recorder on it, a fake monotonic clock."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from exporter.instrument.hashing import Hasher
from exporter.instrument.recorder import Recorder
from tests.instrument.recorder_helpers import SECRET, Clock


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def rec(registry):
    return Recorder(registry, Hasher(SECRET))


@pytest.fixture
def clock():
    return Clock(1000.0)
