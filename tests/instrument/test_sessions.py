"""Sessions: start/end tokens, durations, bounds on open sessions, tier normalisation."""

from __future__ import annotations

import pytest

from exporter.instrument.hashing import Hasher
from exporter.instrument.recorder import Recorder
from tests.instrument.recorder_helpers import SECRET, session_totals


@pytest.fixture
def srec(registry, clock):
    return Recorder(registry, Hasher(SECRET), clock=clock, max_sessions=3)


def test_session_start_and_end_observes_the_duration(registry, srec, clock):
    token = srec.session_started("standard", "user-1")
    assert isinstance(token, str) and len(token) == 32 and "user-1" not in token
    assert srec.open_sessions == 1
    clock.now += 420
    assert srec.session_ended(token) == 420
    assert session_totals(registry, "standard") == (1, 420)
    assert registry.get_sample_value("clary_session_duration_seconds_bucket", {"tier": "standard", "le": "300.0"}) == 0
    assert registry.get_sample_value("clary_session_duration_seconds_bucket", {"tier": "standard", "le": "600.0"}) == 1
    assert srec.open_sessions == 0
    # The starting user counts as active, by HMAC only.
    assert registry.get_sample_value("clary_active_users", {"tier": "standard", "window": "5m"}) == 1


def test_session_ended_twice_or_unknown_records_once(registry, srec, clock):
    token = srec.session_started("lite")
    clock.now += 60
    assert srec.session_ended(token) == 60
    assert srec.session_ended(token) is None
    assert srec.session_ended("not-a-token") is None
    assert session_totals(registry, "lite") == (1, 60)


def test_session_ended_with_a_measured_duration(registry, srec):
    assert srec.session_ended("professional", 1800.0) == 1800.0
    assert session_totals(registry, "professional") == (1, 1800)


def test_open_sessions_are_bounded_oldest_forgotten(registry, srec, clock):
    tokens = [srec.session_started("lite") for _ in range(5)]
    assert srec.open_sessions == 3
    clock.now += 30
    assert [srec.session_ended(t) for t in tokens] == [None, None, 30, 30, 30]
    assert session_totals(registry, "lite") == (3, 90)


def test_sessions_older_than_a_day_are_forgotten(registry, srec, clock):
    old = srec.session_started("lite")
    clock.now += 25 * 3600
    fresh = srec.session_started("lite")
    assert srec.open_sessions == 1
    clock.now += 10
    assert srec.session_ended(old) is None
    assert srec.session_ended(fresh) == 10


def test_session_tier_is_normalised(registry, srec, clock):
    token = srec.session_started("Gold")
    clock.now += 5
    srec.session_ended(token)
    assert session_totals(registry, "unknown") == (1, 5)
