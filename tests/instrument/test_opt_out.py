"""Opted-out users count in aggregates only: no per-user state (active users, sessions, cached digests)."""

from __future__ import annotations

from exporter.instrument.hashing import Hasher
from exporter.instrument.recorder import Recorder
from tests.instrument.recorder_helpers import SECRET, session_totals


def test_opted_out_users_count_in_aggregates_only(registry, clock):
    hasher = Hasher(SECRET)
    opted_out = {hasher.digest("private-user")}
    asked: list[str] = []

    def is_opted_out(hashed: str) -> bool:
        asked.append(hashed)
        return hashed in opted_out

    rec = Recorder(registry, hasher, is_opted_out=is_opted_out, clock=clock)
    rec.user_action("standard", "upload", "private-user")
    rec.user_action("standard", "upload", "open-user")
    rec.user_seen("standard", "private-user")
    token = rec.session_started("standard", "private-user")
    clock.now += 100
    assert rec.session_ended(token) is None
    # Aggregates count both users ...
    assert registry.get_sample_value("clary_user_actions_total", {"tier": "standard", "action": "upload"}) == 2
    # ... per-user state only the one who did not opt out.
    assert registry.get_sample_value("clary_active_users", {"tier": "standard", "window": "24h"}) == 1
    assert rec.open_sessions == 0
    assert session_totals(registry, "standard") == (0, 0)
    assert "private-user" not in rec._digests  # private peek: raw ids kept in memory have no public view
    # The hook only ever sees HMACs, never a raw id.
    assert asked and set(asked) <= {hasher.digest("private-user"), hasher.digest("open-user")}
    assert rec.opted_out("private-user") and not rec.opted_out("open-user")


def test_opting_out_later_stops_per_user_state(registry, clock):
    hasher = Hasher(SECRET)
    opted_out: set[str] = set()
    rec = Recorder(registry, hasher, is_opted_out=opted_out.__contains__, clock=clock)
    rec.active_users._clock = lambda: 1_700_000_000.0  # private seam: the sketches take no clock from the recorder
    rec.user_seen("lite", "u-1")
    assert "u-1" in rec._digests  # private peek: raw ids kept in memory (the digest cache) have no public view
    opted_out.add(hasher.digest("u-1"))
    rec.active_users._clock = lambda: 1_700_000_000.0 + 3600  # a later hour: would count again
    rec.user_seen("lite", "u-1")
    assert "u-1" not in rec._digests
    assert registry.get_sample_value("clary_active_users", {"tier": "lite", "window": "5m"}) == 0
    assert rec.session_ended(rec.session_started("lite", "u-1")) is None


def test_default_is_nobody_opted_out(rec):
    assert rec.is_opted_out is None
    assert rec.opted_out("anyone") is False
