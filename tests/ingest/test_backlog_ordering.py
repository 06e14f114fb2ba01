"""The event backlog against per-user state, over real HTTP: ordering of folds with privacy operations.

Accepted events wait in ``EventBacklog`` before anything is recorded, per-user
activity and the active-user sketches included. The privacy contract must
hold regardless: an event accepted before an opt-out counts for that user;
one accepted while opted out never creates per-user state, even if the user
opts in before the fold; a deletion removes activity still waiting in the
backlog; a graceful shutdown stores the activity of every accepted event;
the backlog is folded every ``BACKLOG_FOLD_SECONDS`` without a scrape; and a
scrape folding on its own thread while requests ingest loses nothing.

Apart from the periodic-fold test, the periodic fold and activity flush are
pushed out to an hour so that what is pending is decided by the test alone.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.api.app import INGEST as INGEST_KEY
from tests.api_helpers import ADMIN, HASH, INGEST, app_client, database, value
from tests.ingest.helpers import activity, body, make_api

HOUR = 3600.0


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def quiet(monkeypatch):
    """No periodic fold or activity flush during the test (both still run once at start-up)."""
    monkeypatch.setattr("exporter.api.app.BACKLOG_FOLD_SECONDS", HOUR)
    monkeypatch.setattr("exporter.api.app.ACTIVITY_FLUSH_SECONDS", HOUR)


def action(user: str, name: str = "login", tier: str = "lite") -> dict:
    return {"type": "user_action", "tier": tier, "action": name, "user_id": user}


async def post_events(client, *events: dict) -> dict:
    resp = await client.post("/api/v1/events", data=body(*events), headers=INGEST)
    assert resp.status == 200
    return await resp.json()


async def admin_post(client, path: str) -> dict:
    resp = await client.post(path, headers=ADMIN)
    assert resp.status == 200
    return await resp.json()


def stored(tmp_path, user: str, kind: str | None = None) -> int:
    """Total activity count of ``user`` (of one kind, or all) in the SQLite store, all days."""
    db = database(tmp_path)
    try:
        return sum(row[4] for row in db.activity(HASH(user)) if kind is None or row[3] == kind)
    finally:
        db.close()


def active(api, tier: str = "lite") -> int:
    return round(api.recorder.active_users.estimate(tier, "5m"))


async def start(aiohttp_client, tmp_path, registry):
    app, client = await app_client(aiohttp_client, tmp_path, registry)
    api = app[INGEST_KEY]
    await asyncio.sleep(0)  # let the start-up runs of the periodic jobs pass
    await api.flush_activity()
    return api, client


# --- 1. opt-out ----------------------------------------------------------------------------------------------

async def test_opt_out_folds_events_accepted_before_it_into_that_users_state(aiohttp_client, tmp_path, registry,
                                                                              quiet):
    """An event pending at the opt-out counts for the user (sketch); one after it leaves no per-user state."""
    api, client = await start(aiohttp_client, tmp_path, registry)
    assert (await post_events(client, action("u1")))["accepted"] == 1
    assert len(api.backlog) == 1 and activity(api, "u1", "login") == 0 and active(api) == 0

    assert await admin_post(client, "/api/v1/users/u1/opt-out") == {"opted_out": True}

    assert len(api.backlog) == 0  # folded by the opt-out, before the user became opted out
    assert active(api) == 1  # the pending event counted u1 as active
    assert activity(api, "u1", "login") == 1  # and its activity stays buffered: opting out deletes nothing
    assert (await post_events(client, action("u1"), action("u1", "upload")))["accepted"] == 2
    assert len(api.backlog) == 2
    await api.flush_activity()
    assert len(api.backlog) == 0
    assert activity(api, "u1", "login") == 0 and activity(api, "u1", "other") == 0
    assert stored(tmp_path, "u1", "login") == 1 and stored(tmp_path, "u1", "upload") == 0
    assert active(api) == 1  # u1 once, and nothing after the opt-out
    # Aggregates count every event, opted out or not.
    assert value(registry, "clary_user_actions_total", tier="lite", action="login") == 2
    assert value(registry, "clary_active_users", tier="lite", window="5m") == 1


async def test_activity_of_an_event_accepted_before_opt_out_is_stored(aiohttp_client, tmp_path, registry, quiet):
    """The pending event's activity row reaches the store after the opt-out; later events add nothing."""
    api, client = await start(aiohttp_client, tmp_path, registry)
    await post_events(client, action("u1"))
    assert len(api.backlog) == 1 and activity(api, "u1", "login") == 0 and stored(tmp_path, "u1") == 0
    await admin_post(client, "/api/v1/users/u1/opt-out")
    await api.flush_activity()
    assert stored(tmp_path, "u1", "login") == 1
    await post_events(client, action("u1"))
    await api.flush_activity()
    assert stored(tmp_path, "u1") == 1
    assert active(api) == 1


# --- 2. opt-in -------------------------------------------------------------------------------------------------

async def test_event_accepted_while_opted_out_stays_untracked_after_opt_in(aiohttp_client, tmp_path, registry, quiet):
    """Opt out, ingest (pending), opt in: the pending event leaves no per-user state; the next one is tracked."""
    api, client = await start(aiohttp_client, tmp_path, registry)
    await admin_post(client, "/api/v1/users/u2/opt-out")
    await post_events(client, action("u2", tier="standard"), {"type": "session", "tier": "standard",
                                                               "duration_seconds": 30, "user_id": "u2"})
    assert len(api.backlog) == 2

    assert await admin_post(client, "/api/v1/users/u2/opt-in") == {"opted_out": False}

    assert len(api.backlog) == 0  # folded by the opt-in, while u2 was still opted out
    assert not api.activity.is_opted_out(HASH("u2"))
    await api.flush_activity()
    assert stored(tmp_path, "u2") == 0
    assert active(api, "standard") == 0
    assert value(registry, "clary_user_actions_total", tier="standard", action="login") == 1
    assert value(registry, "clary_session_duration_seconds_count", tier="standard") == 1

    await post_events(client, action("u2", tier="standard"))
    assert len(api.backlog) == 1
    await api.flush_activity()
    assert stored(tmp_path, "u2", "login") == 1 and stored(tmp_path, "u2", "session") == 0
    assert active(api, "standard") == 1


# --- 3. deletion ------------------------------------------------------------------------------------------------

async def test_delete_removes_activity_still_waiting_in_the_backlog(aiohttp_client, tmp_path, registry, quiet):
    """DELETE while u3's events are pending: the response counts them; the store keeps no u3 row; u4's rows stay."""
    api, client = await start(aiohttp_client, tmp_path, registry)
    await post_events(client, action("u4", "upload"))
    await api.flush_activity()
    assert stored(tmp_path, "u4") == 1
    await post_events(client, action("u3", "upload"), action("u3", "upload"), action("u3", "search"),
                      {"type": "session", "tier": "lite", "duration_seconds": 5, "user_id": "u3"},
                      action("u4", "search"))
    assert len(api.backlog) == 5 and activity(api, "u3", "upload") == 0 and stored(tmp_path, "u3") == 0

    resp = await client.delete("/api/v1/users/u3", headers=ADMIN)

    assert resp.status == 200
    # One daily row per kind: upload, search, session.
    assert await resp.json() == {"removed": {"feedback": 0, "notifications": 0, "activity": 3, "errors": 0, "consents": 0}, "total": 3}
    assert len(api.backlog) == 0 and activity(api, "u3", "upload") == 0
    api.backlog.fold()
    await api.flush_activity()
    assert stored(tmp_path, "u3") == 0
    assert stored(tmp_path, "u4", "upload") == 1 and stored(tmp_path, "u4", "search") == 1
    resp = await client.delete("/api/v1/users/u3", headers=ADMIN)
    assert (await resp.json())["total"] == 0


# --- 4. the periodic fold -----------------------------------------------------------------------------------------

async def test_the_backlog_is_folded_every_second_without_a_scrape(aiohttp_client, tmp_path, registry, monkeypatch):
    """Nothing scrapes or folds: the lifecycle's clary-backlog-fold task records the event within a few seconds."""
    monkeypatch.setattr("exporter.api.app.ACTIVITY_FLUSH_SECONDS", HOUR)  # the flush would fold and take pending
    api, client = await start(aiohttp_client, tmp_path, registry)
    await post_events(client, action("u5"))
    assert len(api.backlog) == 1 and activity(api, "u5", "login") == 0
    deadline = time.monotonic() + 5
    while activity(api, "u5", "login") == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert activity(api, "u5", "login") == 1
    assert len(api.backlog) == 0
    assert active(api) == 1


# --- 5. shutdown ----------------------------------------------------------------------------------------------------

async def test_graceful_shutdown_stores_the_activity_of_every_accepted_event(aiohttp_client, tmp_path, registry,
                                                                             quiet):
    """Events still in the backlog when the app stops: their activity rows are in the store afterwards."""
    api, client = await start(aiohttp_client, tmp_path, registry)
    await post_events(client, action("u6"), action("u6"), action("u7", "upload"),
                      {"type": "session", "tier": "professional", "duration_seconds": 9, "user_id": "u7"})
    assert len(api.backlog) == 4 and stored(tmp_path, "u6") == 0 and stored(tmp_path, "u7") == 0

    await client.close()  # app cleanup: the lifecycle's final flush

    assert len(api.backlog) == 0 and api.activity.pending == {}
    assert stored(tmp_path, "u6", "login") == 2
    assert stored(tmp_path, "u7", "upload") == 1 and stored(tmp_path, "u7", "session") == 1
    db = database(tmp_path)
    try:
        tiers = {(user, row[2], row[3]) for user in ("u6", "u7") for row in db.activity(HASH(user))}
    finally:
        db.close()
    assert tiers == {("u6", "lite", "login"), ("u7", "lite", "upload"), ("u7", "professional", "session")}


# --- 6. a scraping thread while requests ingest ----------------------------------------------------------------------

USERS = [f"w{i}" for i in range(5)]


async def test_scrapes_on_another_thread_while_requests_ingest_keep_activity_exact(aiohttp_client, tmp_path, registry,
                                                                                    quiet):
    """A thread scrapes back to back (folding on its thread) while 200 batches arrive over HTTP and the activity
    is flushed now and then: every user's stored activity equals exactly what was sent."""
    api, client = await start(aiohttp_client, tmp_path, registry)
    api.backlog.fold_at = 13  # inline folds on the loop thread too
    sent: Counter = Counter()
    accepted = 0
    done = threading.Event()
    scrapes: list[int] = []
    errors: list[BaseException] = []

    def scrape() -> None:
        try:
            while not done.is_set() or len(scrapes) < 3:
                scrapes.append(len(generate_latest(registry)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    track_all = api.activity.track_all
    trackers: set[str] = set()

    def track_and_note_thread(*args, **kwargs) -> list:
        trackers.add(threading.current_thread().name)
        return track_all(*args, **kwargs)

    api.activity.track_all = track_and_note_thread
    batches = 200
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    scraper = threading.Thread(target=scrape, name="scraper")
    scraper.start()
    try:
        for i in range(batches):
            events = []
            for j, user in enumerate(USERS):
                for _ in range((i + j) % 3 + 1):
                    events.append(action(user))
                    sent[user, "login"] += 1
            session_user = USERS[i % len(USERS)]
            events.append({"type": "session", "tier": "lite", "duration_seconds": 1, "user_id": session_user})
            sent[session_user, "session"] += 1
            result = await post_events(client, *events)
            assert result["accepted"] == len(events)
            accepted += result["accepted"]
            if i % 25 == 24:
                await api.flush_activity()
    finally:
        done.set()
        scraper.join(30)
        sys.setswitchinterval(interval)
    assert not errors and not scraper.is_alive() and len(scrapes) >= 3
    # Activity was tracked on both threads: folds by the scrapes and inline folds by the requests.
    assert trackers == {"scraper", threading.current_thread().name}

    await api.flush_activity()
    assert len(api.backlog) == 0 and api.activity.pending == {}
    got = Counter({(user, kind): stored(tmp_path, user, kind) for user in USERS for kind in ("login", "session")})
    assert got == sent
    assert sum(got.values()) == accepted
    assert value(registry, "clary_user_actions_total", tier="lite", action="login") == \
        sum(n for (_, kind), n in sent.items() if kind == "login")
    assert value(registry, "clary_session_duration_seconds_count", tier="lite") == batches
    assert active(api) == len(USERS)


def test_forget_while_a_fold_on_another_thread_tracks_new_users(tmp_path):
    """DELETE or opt-out (forget) racing a scrape's fold (track filling the digest cache) neither fails nor mixes users.

    Without the lock around changes to the digest cache, this raised
    "dictionary changed size during iteration" within a few calls.
    """
    api, _ = make_api(tmp_path)
    users = api.activity
    stop = threading.Event()
    errors: list[BaseException] = []

    def fold_thread() -> None:
        try:
            n = 0
            while not stop.is_set() and n < 50_000:
                users.track("lite", f"user-{n}", "login")
                n += 1
        except BaseException as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    users.track("lite", "gone", "login")
    thread = threading.Thread(target=fold_thread)
    thread.start()
    try:
        for _ in range(60):
            users.forget(HASH("gone"))
            time.sleep(0)
    finally:
        stop.set()
        thread.join(30)
    assert errors == []
    # Private peek: the raw-id -> digest cache is memory only, but a deleted user's raw id must not stay in it.
    assert "gone" not in users._digests
    assert not any(who == HASH("gone") for who, *_ in users.pending)
    assert sum(users.pending.values()) >= 1  # the other thread's users are still buffered

    def tracked(user: str) -> int:
        return sum(count for (who, *_), count in users.pending.items() if who == HASH(user))

    assert tracked("user-0") == 1  # the first the other thread tracked, under its own digest
    users.track("lite", "user-0", "login")  # through the digest cache the race went on in: still its own digest
    assert tracked("user-0") == 2
