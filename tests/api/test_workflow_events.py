"""Sessions sent through POST /api/v1/events: transition and funnel counts against a reference model.

The reference (:func:`reference`) is the plain reading of the rules in
docs/metrics.md: per session, ``start`` -> each action (``other`` off the
allow-list) -> ``end`` when the session is ended explicitly; a funnel step
is reached when its action comes after the previous step was reached,
other actions in between allowed, once per session.
"""

from __future__ import annotations

import itertools
import json
import logging
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.catalog import ACTION
from exporter.server.app import create_app
from tests.api_helpers import INGEST, make_config, thread_server

FUNNELS = {"onboarding": ["login", "upload", "export"], "research": ["search", "view", "search"]}
ACTIONS = ("login", "upload", "view", "export", "search", "jump")  # jump: off the allow-list
TIERS = ("lite", "standard", "professional")
URL = "/api/v1/events"


def reference(sessions: list[tuple[str, list[str], bool]]) -> tuple[Counter, Counter]:
    """Transitions (tier, from, to) and funnel steps (tier, funnel, step, action) the sessions should count."""
    transitions: Counter = Counter()
    steps: Counter = Counter()
    for tier, actions, ended in sessions:
        previous = "start"
        reached = dict.fromkeys(FUNNELS, 0)
        for raw in actions:
            action = raw if raw in ACTION.values else "other"
            transitions[tier, previous, action] += 1
            previous = action
            for name, funnel in FUNNELS.items():
                if reached[name] < len(funnel) and funnel[reached[name]] == action:
                    reached[name] += 1
                    steps[tier, name, str(reached[name]), action] += 1
        if ended:
            transitions[tier, previous, "end"] += 1
    return transitions, steps


def counts(registry: CollectorRegistry) -> tuple[Counter, Counter]:
    transitions: Counter = Counter()
    steps: Counter = Counter()
    for family in registry.collect():
        for s in family.samples:
            labels = s.labels
            if s.name == "clary_workflow_transitions_total":
                transitions[labels["tier"], labels["from_action"], labels["to_action"]] += s.value
            elif s.name == "clary_funnel_sessions_total":
                steps[labels["tier"], labels["funnel"], labels["step"], labels["action"]] += s.value
    return transitions, steps


def delta(after: Counter, before: Counter) -> Counter:
    return Counter({key: value - before[key] for key, value in after.items() if value - before[key]})


def post(base: str, events: list[dict]) -> dict:
    request = urllib.request.Request(base + URL, data=json.dumps({"events": events}).encode(),
                                     headers={**INGEST, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    registry = CollectorRegistry()
    app = create_app(make_config(tmp_path_factory.mktemp("workflows"), funnels=FUNNELS), registry)
    with thread_server(app) as running:
        yield running, registry


sessions_strategy = st.lists(
    st.tuples(st.sampled_from(TIERS), st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=8), st.booleans()),
    min_size=1, max_size=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sessions=sessions_strategy, data=st.data())
def test_sessions_through_the_events_api_count_as_the_reference_model(server, sessions, data):
    running, registry = server
    ids = [f"s-{uuid.uuid4()}" for _ in sessions]
    # Each session's events (its actions, then its end if it ended) in order, sessions interleaved at random.
    queues = [[{"type": "user_action", "tier": tier, "action": action, "session_id": ids[index]}
               for action in actions]
              + ([{"type": "session", "tier": tier, "duration_seconds": 60, "session_id": ids[index]}] if ended else [])
              for index, (tier, actions, ended) in enumerate(sessions)]
    order = data.draw(st.permutations([index for index, queue in enumerate(queues) for _ in queue]))
    positions = [0] * len(queues)
    events = []
    for index in order:
        events.append(queues[index][positions[index]])
        positions[index] += 1
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=6)))
    before = counts(registry)
    for start, end in itertools.pairwise([0, *cuts, len(events)]):
        if start < end:
            assert post(running.url, events[start:end])["accepted"] == end - start
            if data.draw(st.integers(0, 3)):  # a scrape records what is queued: the next batch starts a new fold
                registry.get_sample_value("clary_user_actions_total", {"tier": "lite", "action": "login"})
    after = counts(registry)
    expected_transitions, expected_steps = reference(sessions)
    assert delta(after[0], before[0]) == expected_transitions
    assert delta(after[1], before[1]) == expected_steps


async def test_session_ids_never_reach_metrics_logs_or_disk(aiohttp_client, tmp_path, caplog):
    raw = "raw-session-7f3a9c1e-carol@example.com"
    registry = CollectorRegistry()
    client = await aiohttp_client(create_app(make_config(tmp_path, funnels=FUNNELS), registry))
    caplog.set_level(logging.DEBUG)
    events = [{"type": "user_action", "tier": "lite", "action": action, "user_id": "carol", "session_id": raw}
              for action in ("login", "upload", "export")]
    events.append({"type": "session", "tier": "lite", "duration_seconds": 5, "user_id": "carol", "session_id": raw})
    events.append({"type": "user_action", "tier": "lite", "action": "view", "session_id": raw + "x" * 200})
    resp = await client.post(URL, json={"events": events}, headers=INGEST)
    body = await resp.json()
    assert resp.status == 200 and body["accepted"] == 4
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(4, "session_id")]
    metrics = await (await client.get("/metrics")).text()
    assert 'clary_funnel_sessions_total{action="export",funnel="onboarding",step="3",tier="lite"} 1.0' in metrics
    assert 'clary_workflow_transitions_total{from_action="export",tier="lite",to_action="end"} 1.0' in metrics
    await client.close()  # the store flushed and closed: everything that reaches disk is there
    assert raw not in metrics and raw not in caplog.text and raw not in json.dumps(body)
    for path in Path(tmp_path).rglob("*"):
        if path.is_file():
            assert raw.encode() not in path.read_bytes(), path


def test_a_fold_that_starts_with_an_end_still_ends_each_session_after_its_actions(server):
    """Events are recorded in bulk per type; a session's end must still come after its own actions."""
    running, registry = server
    first, second = f"s-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    before = counts(registry)
    post(running.url, [{"type": "user_action", "tier": "lite", "action": "login", "session_id": first}])
    registry.get_sample_value("clary_user_actions_total", {"tier": "lite", "action": "login"})  # a fold
    post(running.url, [{"type": "session", "tier": "lite", "duration_seconds": 1, "session_id": first},
                       {"type": "user_action", "tier": "lite", "action": "search", "session_id": second},
                       {"type": "session", "tier": "lite", "duration_seconds": 1, "session_id": second}])
    assert delta(counts(registry)[0], before[0]) == {("lite", "start", "login"): 1, ("lite", "login", "end"): 1,
                                                     ("lite", "start", "search"): 1, ("lite", "search", "end"): 1}
