"""User workflows through the recording API: transitions, funnels, idle expiry, the session cap, privacy."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.instrument.hashing import Hasher
from exporter.instrument.recorder import Recorder
from exporter.instrument.workflows import Workflows
from tests.instrument.recorder_helpers import SECRET

FUNNELS = {"onboarding": ["login", "upload", "export"]}
TRANSITIONS = "clary_workflow_transitions_total"
FUNNEL = "clary_funnel_sessions_total"
EVICTED = "clary_workflow_sessions_evicted_total"


@pytest.fixture
def wf_rec(registry, clock):
    return Recorder(registry, Hasher(SECRET), clock=clock, funnels=FUNNELS, workflow_idle_timeout=1800,
                    workflow_max_sessions=3)


def moved(registry: CollectorRegistry, name: str, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def transitions(registry: CollectorRegistry, tier: str = "lite") -> dict[tuple[str, str], float]:
    out = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name == TRANSITIONS and s.labels["tier"] == tier and s.value:
                out[s.labels["from_action"], s.labels["to_action"]] = s.value
    return out


def test_a_session_counts_start_each_move_and_its_end(wf_rec, registry):
    for action in ("login", "view", "jump"):  # jump is off the allow-list: other
        wf_rec.user_action("lite", action, "alice", session_id="s-1")
    wf_rec.workflow_ended(["s-1"])
    wf_rec.workflow_ended(["s-1"])  # ended already: nothing more
    assert transitions(registry) == {("start", "login"): 1, ("login", "view"): 1, ("view", "other"): 1,
                                     ("other", "end"): 1}
    assert len(wf_rec.workflows) == 0


def test_funnel_steps_count_in_order_with_other_actions_between_once_per_session(wf_rec, registry):
    for action in ("upload", "login", "view", "upload", "upload", "login", "export", "export"):
        wf_rec.user_action("standard", action, session_id="s-2")
    steps = {step: moved(registry, FUNNEL, tier="standard", funnel="onboarding", step=step, action=action)
             for step, action in (("1", "login"), ("2", "upload"), ("3", "export"))}
    assert steps == {"1": 1, "2": 1, "3": 1}
    # Another session that never uploads reaches step 1 only.
    wf_rec.user_action("standard", "login", session_id="s-3")
    wf_rec.user_action("standard", "export", session_id="s-3")
    assert moved(registry, FUNNEL, tier="standard", funnel="onboarding", step="1", action="login") == 2
    assert moved(registry, FUNNEL, tier="standard", funnel="onboarding", step="3", action="export") == 1


def test_a_session_idle_past_the_timeout_ends_on_the_next_scrape(wf_rec, registry, clock):
    wf_rec.user_action("lite", "login", session_id="s-4")
    clock.now += 1799
    assert ("login", "end") not in transitions(registry)
    clock.now += 2
    assert transitions(registry)[("login", "end")] == 1  # the scrape itself expired it
    assert len(wf_rec.workflows) == 0
    wf_rec.user_action("lite", "view", session_id="s-4")  # the id again: a new session
    assert transitions(registry)[("start", "view")] == 1


def test_a_session_idle_past_the_timeout_ends_on_the_next_action(wf_rec, registry, clock):
    wf_rec.user_action("lite", "login", session_id="s-5")
    clock.now += 1801
    wf_rec.user_action("lite", "view", session_id="s-6")
    wf_rec.user_action("lite", "view", session_id="s-5")
    assert transitions(registry) == {("start", "login"): 1, ("login", "end"): 1, ("start", "view"): 2}


def test_past_the_cap_the_least_recently_seen_session_is_evicted_ended_and_counted(wf_rec, registry, clock):
    for index in range(3):
        wf_rec.user_action("professional", "login", session_id=f"cap-{index}")
        clock.now += 1
    wf_rec.user_action("professional", "upload", session_id="cap-0")  # cap-1 is now the least recently seen
    wf_rec.user_action("professional", "view", session_id="cap-3")
    assert len(wf_rec.workflows) == 3
    assert moved(registry, EVICTED, tier="professional") == 1
    assert transitions(registry, "professional")[("login", "end")] == 1
    wf_rec.user_action("lite", "upload", session_id="cap-1")  # forgotten: starts again, evicting cap-2
    assert transitions(registry, "lite")[("start", "upload")] == 1
    assert moved(registry, EVICTED, tier="professional") == 2  # counted in the evicted session's tier
    assert moved(registry, EVICTED, tier="lite") == 0


def test_an_opted_out_user_leaves_no_session_state(registry, clock):
    hasher = Hasher(SECRET)
    rec = Recorder(registry, hasher, clock=clock, funnels=FUNNELS,
                   is_opted_out=lambda hashed: hashed == hasher.digest("olga"))
    rec.user_action("lite", "login", "olga", session_id="s-olga")
    assert len(rec.workflows) == 0 and transitions(registry) == {}
    assert moved(registry, "clary_user_actions_total", tier="lite", action="login") == 1


def test_session_ids_are_hashed_and_never_exposed(wf_rec, registry):
    raw = "raw-session-id-4f1e2d"
    wf_rec.user_action("lite", "login", "alice", session_id=raw)
    assert raw not in generate_latest(registry).decode()
    assert list(wf_rec.workflows._open) == [Hasher(SECRET).session_key(raw)]
    assert raw.encode() not in wf_rec.workflows._open and len(Hasher(SECRET).session_key(raw)) == 16
    assert Hasher(SECRET + "x").session_key(raw) != Hasher(SECRET).session_key(raw)  # keyed by the secret


def test_bounds_are_checked():
    with pytest.raises(ValueError):
        Workflows(max_sessions=0)
