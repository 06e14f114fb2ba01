"""Distinct users and licenses over sliding windows, with a fake clock."""

from __future__ import annotations

import hashlib

from prometheus_client import CollectorRegistry

from exporter.instrument.sketches import WINDOWS, ActiveLicenses, ActiveUsers
from exporter.catalog import TIERS
from exporter.instrument.hashing import Hasher

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
# An hour boundary plus 30 minutes and 30 seconds: no test time sits on a bucket edge.
T0 = 1_700_002_800.0 + 30 * MINUTE + 30


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def hashed(prefix: str, n: int) -> list[str]:
    hasher = Hasher("activity-test-secret")
    return [hasher.digest(f"{prefix}-{i}") for i in range(n)]


def windows(users: ActiveUsers, tier: str) -> dict[str, int]:
    return {w: round(users.estimate(tier, w)) for w in WINDOWS}


def test_windows_include_and_exclude_users_by_last_activity():
    clock = Clock(T0 - 25 * HOUR)
    users = ActiveUsers(clock)
    groups = [  # (seen this long before T0, how many users)
        (25 * HOUR, 40),
        (2 * HOUR, 30),
        (10 * MINUTE, 20),
        (7 * MINUTE, 5),
        (3 * MINUTE, 3),
        (30, 10),
    ]
    for ago, n in groups:
        clock.now = T0 - ago
        for user in hashed(f"ago{ago}", n):
            users.seen("standard", user)
    clock.now = T0
    assert windows(users, "standard") == {"5m": 3 + 10, "1h": 20 + 5 + 3 + 10, "24h": 30 + 20 + 5 + 3 + 10}
    assert windows(users, "lite") == {"5m": 0, "1h": 0, "24h": 0}

    # Time moves on with no activity: users leave the windows one by one.
    clock.now = T0 + 6 * MINUTE
    assert windows(users, "standard") == {"5m": 0, "1h": 38, "24h": 68}
    clock.now = T0 + 2 * HOUR
    assert windows(users, "standard") == {"5m": 0, "1h": 0, "24h": 68}
    clock.now = T0 + 25 * HOUR
    assert windows(users, "standard") == {"5m": 0, "1h": 0, "24h": 0}


def test_a_returning_user_counts_once_per_window():
    clock = Clock()
    users = ActiveUsers(clock)
    (alice,) = hashed("alice", 1)
    for step in range(50):
        clock.now = T0 + step * 50  # every 50 s for ~42 minutes
        users.seen("professional", alice)
    assert windows(users, "professional") == {"5m": 1, "1h": 1, "24h": 1}


def test_tiers_are_separate_and_unknown_tiers_fold_into_unknown():
    clock = Clock()
    users = ActiveUsers(clock)
    for tier, n in (("lite", 4), ("standard", 7), ("gold", 2), ("unknown", 1)):
        for user in hashed(tier, n):
            users.seen(tier, user)
    registry = CollectorRegistry()
    registry.register(users)
    got = {
        (s.labels["tier"], s.labels["window"]): s.value
        for f in registry.collect()
        for s in f.samples
        if s.name == "clary_active_users"
    }
    assert len(got) == 4 * 3
    for window in WINDOWS:
        assert got["lite", window] == 4
        assert got["standard", window] == 7
        assert got["professional", window] == 0
        assert got["unknown", window] == 3


def test_estimate_error_within_two_percent_at_a_million_users():
    clock = Clock()  # 1,000,000 users over the last ~4 minutes: five minute buckets
    users = ActiveUsers(clock)
    n, per_second = 1_000_000, 4000
    update, sha256 = users.seen, hashlib.sha256
    for second in range(n // per_second):  # 250 s of traffic, ending 1 s before T0
        clock.now = T0 - 250 + second
        for i in range(second * per_second, (second + 1) * per_second):
            update("standard", sha256(b"user-%d" % i).hexdigest())
    clock.now = T0
    for window in WINDOWS:
        estimate = users.estimate("standard", window)
        assert abs(estimate - n) / n <= 0.02, (window, estimate)


def test_memory_stays_bounded_over_three_days():
    clock = Clock()
    users = ActiveUsers(clock)
    bound = {size: count for size, count in
             ((60, max(c for s, c in WINDOWS.values() if s == 60)), (3600, 24))}
    assert bound == {60: 60, 3600: 24}
    most = 0
    for i in range(3 * 24 * 60 * 2):  # one new user per tier every 30 s for 3 days
        clock.now = T0 + i * 30
        for tier in (*TIERS, "unknown"):
            users.seen(tier, f"{tier}-{i}")
        if i % 97 == 0:
            # Private peek: memory held is not observable through estimates, only by counting the sketches.
            most = max(most, max(sum(len(b.sketches) for b in per_tier.values())
                                 for per_tier in users._tiers.values()))
    for per_tier in users._tiers.values():  # private, as above: the number of sketches kept per bucket size
        assert set(per_tier) == {60, 3600}
        assert len(per_tier[60].sketches) == 60
        assert len(per_tier[3600].sketches) == 24
    assert most <= 60 + 24
    # The windows still report the recent users only (2 per minute).
    est = windows(users, "lite")
    assert 8 <= est["5m"] <= 10
    assert 118 <= est["1h"] <= 120
    assert 23 * 120 <= est["24h"] <= 24 * 120 * 1.02


def test_active_licenses_24h_window_and_tiers():
    clock = Clock()
    licenses = ActiveLicenses(clock)

    def counts():
        (family,) = licenses.collect()
        return {s.labels["tier"]: s.value for s in family.samples}

    assert counts() == {"lite": 0, "standard": 0, "professional": 0, "unknown": 0}
    licenses.seen("lite", "aaaaaaaaaaaa")
    licenses.seen("professional", "bbbbbbbbbbbb")
    licenses.seen("professional", "cccccccccccc")
    licenses.seen("professional", "bbbbbbbbbbbb")  # same license again: counted once
    clock.now += 12 * HOUR
    licenses.seen("professional", "dddddddddddd")
    licenses.seen("lite", "aaaaaaaaaaaa")  # seen again: its 24 h restart now
    assert counts() == {"lite": 1, "standard": 0, "professional": 3, "unknown": 0}

    clock.now = T0 + DAY - 1
    assert counts()["professional"] == 3
    clock.now = T0 + DAY + 1  # the first two professional licenses expire
    assert counts() == {"lite": 1, "standard": 0, "professional": 1, "unknown": 0}
    clock.now = T0 + 12 * HOUR + DAY + 1
    assert counts() == {"lite": 0, "standard": 0, "professional": 0, "unknown": 0}


def test_active_licenses_memory_limit_drops_the_oldest():
    clock = Clock()
    licenses = ActiveLicenses(clock, limit=3)
    for i in range(5):  # license i seen at T0 + i + 1
        clock.now += 1
        licenses.seen("standard", f"{i:012x}")

    def standard() -> float:
        (family,) = licenses.collect()
        return {s.labels["tier"]: s.value for s in family.samples}["standard"]

    assert standard() == 3
    # Which three were kept shows in when they leave the 24 h window: one at a time, after licenses 2, 3
    # and 4 reach a day old. Had 0 or 1 been kept, the count would drop before T0 + 2.5 + DAY.
    counts = []
    for age in (2.5, 3.5, 4.5, 5.5):
        clock.now = T0 + DAY + age
        counts.append(standard())
    assert counts == [3, 2, 1, 0]


def test_repeat_activity_within_a_minute_skips_the_sketches(monkeypatch):
    from exporter.instrument import sketches as activity

    updates: list[tuple[int, str]] = []
    original = activity._Buckets.update

    def counting(self, now, key):
        updates.append((self.size, key))
        original(self, now, key)

    # Private seam: skipping the sketches is a saving only (estimates are the same), seen only by counting updates.
    monkeypatch.setattr(activity._Buckets, "update", counting)
    clock = Clock(T0 - 20)  # 10 s into a minute
    users = ActiveUsers(clock)
    alice, bob = hashed("repeat", 2)
    for _ in range(100):
        users.seen("lite", alice)
        clock.now += 0.1
    assert updates == [(60, alice), (3600, alice)]
    users.seen("lite", bob)
    users.seen("standard", alice)  # another tier is another set
    assert len(updates) == 6
    clock.now = T0 + 6 * MINUTE  # a new minute: alice is recorded again
    users.seen("lite", alice)
    assert updates[-2:] == [(60, alice), (3600, alice)] and len(updates) == 8
    assert windows(users, "lite") == {"5m": 1, "1h": 2, "24h": 2}
    assert windows(users, "standard") == {"5m": 0, "1h": 1, "24h": 1}


def test_repeat_suppression_is_bounded_and_exact(monkeypatch):
    from exporter.instrument import sketches as activity

    monkeypatch.setattr(activity, "RECENT_LIMIT", 5)
    clock = Clock()
    users = ActiveUsers(clock)
    many = hashed("bounded", 40)
    for _ in range(3):
        for user in many:
            users.seen("professional", user)
    # Private peek: the suppression set's size is memory only; estimates are the same either way.
    assert len(users._recent["professional"]) == 5
    assert windows(users, "professional") == {"5m": 40, "1h": 40, "24h": 40}
    clock.now += MINUTE
    users.seen("professional", many[0])
    # A new minute starts with an empty set: many[0], suppressed all of the last minute, is recorded in this
    # one, so it is the one user active in the 5 minutes that start with it (the first minute left out).
    clock.now += 4 * MINUTE
    assert windows(users, "professional") == {"5m": 1, "1h": 40, "24h": 40}, "a new minute starts with an empty set"
