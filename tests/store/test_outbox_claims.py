"""Outbox claims (``exporter.store.outbox``): several replicas draining one outbox send each row once per receiver.

Every test runs on SQLite (several connections to one file) and on a real PostgreSQL (tests/postgres.py).
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time

import pytest
from aiohttp import web

from exporter.api.notify import Notifier, summary
from exporter.store import outbox
from exporter.store.database import Database, FeedbackRecord, Store, new_feedback_id
from tests.api_helpers import WebhookReceiver

NOW = 1_750_000_000.0
URLS = [f"http://127.0.0.1:9/{n}" for n in range(3)]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    """(dialect, make): ``make()`` opens one more Database ("replica") on the same store."""
    if request.param == "sqlite":
        def make() -> Database:
            return Database(tmp_path / "clary.db")
    else:
        url = request.getfixturevalue("database_url")

        def make() -> Database:
            return Database(url=url)
    opened: list[Database] = []

    def tracked() -> Database:
        opened.append(make())
        return opened[-1]

    yield request.param, tracked
    for db in opened:
        db.close()


def urgent(db: Database, urls: list[str], created_at: float = NOW, text: str = "crash on save") -> str:
    record = FeedbackRecord(tier="lite", type="bug", rating=1, text=text, metadata=None, user_hash=None,
                            urgent=True, created_at=created_at, id=new_feedback_id())
    payload = json.dumps(summary({**record.as_dict(), "created_at": "2025-06-15T09:12:03.064Z"}))
    db.add_feedback(record, [(url, payload) for url in urls])
    return record.id


def test_concurrent_claims_take_every_row_exactly_once(backend):
    _, make = backend
    writer = make()
    for n in range(20):
        urgent(writer, URLS, NOW - n)
    expected = sorted(row[0] for row in writer.outbox())
    assert len(expected) == 60
    replicas = [make() for _ in range(3)]
    for db in replicas:
        db.connection()  # connected (and the schema checked) before the race starts
    start = threading.Barrier(len(replicas))
    claimed: dict[int, list[int]] = {n: [] for n in range(len(replicas))}

    def drain(n: int, db: Database) -> None:
        start.wait()
        for _ in range(200):  # bounded: 60 rows in batches of 3 need 20 claims in all
            batch = outbox.claim(db, NOW, lease_seconds=60, limit=3)
            claimed[n].extend(d.id for d in batch)
            if not batch and outbox.due_deliveries(db, NOW) == []:
                return

    threads = [threading.Thread(target=drain, args=(n, db)) for n, db in enumerate(replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    every = [delivery_id for ids in claimed.values() for delivery_id in ids]
    assert sorted(every) == expected  # each row once: no duplicate, none left out
    # Within the lease nothing is claimable again, by anyone.
    assert all(outbox.claim(db, NOW + 59, lease_seconds=60, limit=100) == [] for db in replicas)


def test_a_claim_is_oldest_first_and_returns_the_rows(backend):
    _, make = backend
    db = make()
    late = urgent(db, URLS[:1], NOW)
    early = urgent(db, URLS[:1], NOW - 10)
    urgent(db, URLS[:1], NOW + 5)  # not due yet
    (first,) = outbox.claim(db, NOW, lease_seconds=60, limit=1)
    assert (first.feedback_id, first.url, first.attempts) == (early, URLS[0], 0)
    assert json.loads(first.payload)["feedback"]["id"] == early
    assert [d.feedback_id for d in outbox.claim(db, NOW, lease_seconds=60, limit=5)] == [late]
    assert outbox.claim(db, NOW, lease_seconds=60, limit=5) == []
    assert outbox.claim(db, NOW, lease_seconds=60, limit=5, urls=[URLS[1]]) == []


def test_an_expired_lease_makes_the_row_claimable_again(backend):
    _, make = backend
    first, second = make(), make()
    urgent(first, URLS[:1])
    (taken,) = outbox.claim(first, NOW, lease_seconds=30, limit=10)
    assert outbox.next_delivery_at(second) == NOW + 30
    assert outbox.claim(second, NOW + 29.9, lease_seconds=30, limit=10) == []
    # The claimer died without recording an outcome: at the lease's end the row is due again.
    (again,) = outbox.claim(second, NOW + 30, lease_seconds=30, limit=10)
    assert (again.id, again.attempts) == (taken.id, 0)
    outbox.record_deliveries(second, done=[again.id])
    assert first.outbox() == [] and outbox.claim(first, NOW + 1000, limit=10) == []


def test_a_claimer_past_its_lease_cannot_overwrite_the_next_claim(backend):
    _, make = backend
    stalled, other = make(), make()
    urgent(stalled, URLS[:1])
    (late,) = outbox.claim(stalled, NOW, lease_seconds=30, limit=10)
    assert late.lease_until == NOW + 30
    (taken,) = outbox.claim(other, NOW + 31, lease_seconds=30, limit=10)  # the first lease ended
    assert (taken.id, taken.lease_until) == (late.id, NOW + 61)
    # The stalled claimer's attempt fails now: its backoff would make the row due while the other sends it.
    outbox.record_deliveries(stalled, failed=[(late.id, 1, NOW + 32, "HTTP 502")], claims={late.id: late.lease_until})
    assert [row[3:] for row in other.outbox()] == [(0, NOW + 61, None)]  # the other claim stands, untouched
    assert outbox.claim(stalled, NOW + 32, limit=10) == []
    # The row's own claimer records its failure: attempts and backoff as usual.
    outbox.record_deliveries(other, failed=[(taken.id, 1, NOW + 62, "HTTP 503")], claims={taken.id: taken.lease_until})
    assert [row[3:] for row in other.outbox()] == [(1, NOW + 62, "HTTP 503")]
    # Without a claim (an inspection tool, an old caller) the write is unconditional, as before.
    outbox.record_deliveries(stalled, failed=[(taken.id, 2, NOW + 70, "HTTP 504")])
    assert [row[3:] for row in other.outbox()] == [(2, NOW + 70, "HTTP 504")]
    # A delivered row goes whoever holds it: the receiver has it.
    outbox.record_deliveries(stalled, done=[late.id])
    assert other.outbox() == []


def test_resume_keeps_other_replicas_leases_on_postgresql(backend):
    dialect, make = backend
    db = make()
    urgent(db, URLS[:2])
    outbox.claim(db, NOW, lease_seconds=60, limit=10)
    # A restart configured with the first webhook only.
    resumed, dropped = outbox.resume_deliveries(make(), URLS[:1], NOW + 1)
    rows = {row[2]: row for row in db.outbox()}
    if dialect == "postgres":
        # Another replica may be sending the first now: its lease stands. The second webhook may still be
        # configured on the other replicas (a rolling config change): its row stays for them.
        assert (resumed, dropped) == (0, 0)
        assert {url: row[4] for url, row in rows.items()} == {URLS[0]: NOW + 60, URLS[1]: NOW + 60}
    else:  # one replica: the lease was this exporter's previous run's, so it is due at once; the other goes
        assert (resumed, dropped) == (1, 1)
        assert {url: row[4] for url, row in rows.items()} == {URLS[0]: NOW + 1}


class CountingReceiver(WebhookReceiver):
    """A webhook on 127.0.0.1 that counts posts per delivery; with ``fail_first`` each delivery's first post
    gets a 500."""

    def __init__(self, fail_first: bool = False):
        super().__init__()
        self.fail_first = fail_first
        self.posts: collections.Counter[str] = collections.Counter()
        self.accepted: collections.Counter[str] = collections.Counter()
        self.late: list[str] = []  # posts of a delivery that was already accepted

    async def _hook(self, request: web.Request) -> web.Response:
        key = request.headers["X-Clary-Delivery"]
        body = await request.json()
        assert key.startswith(body["feedback"]["id"] + "/")
        if self.accepted[key]:
            self.late.append(key)
        self.posts[key] += 1
        if self.fail_first and self.posts[key] == 1:
            return web.Response(status=500)
        self.accepted[key] += 1
        return web.Response(status=204)


async def test_three_notifiers_deliver_each_report_once_per_receiver(backend):
    _, make = backend
    steady, flaky = await CountingReceiver().start(), await CountingReceiver(fail_first=True).start()
    writer = make()
    writer.connection()
    location = {"url": writer.url} if writer.url else {"data_dir": writer.path.parent}
    stores = [Store(**location, pool_size=2) for _ in range(3)]
    notifiers = [Notifier(store, [steady.url, flaky.url], base_backoff=0.05, max_backoff=0.2, concurrency=2)
                 for store in stores]
    try:
        for notifier in notifiers:
            await notifier.start()
        ids = [urgent(writer, [steady.url, flaky.url], time.time(), f"report {n}") for n in range(30)]
        for notifier in notifiers:
            notifier.wake()
        deadline = time.monotonic() + 30
        while (writer.outbox() or len(flaky.accepted) < 30) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a stray second send would arrive now
        assert writer.outbox() == []
        for receiver in (steady, flaky):
            assert sorted(key.split("/")[0] for key in receiver.accepted) == sorted(ids)
            assert set(receiver.accepted.values()) == {1} and receiver.late == []
        assert set(steady.posts.values()) == {1}
        assert set(flaky.posts.values()) == {2}  # the 500, then the one accepted retry
        assert sum(n.delivered for n in notifiers) == 60
        assert sum(n.failed_attempts for n in notifiers) == 30
    finally:
        for notifier in notifiers:
            await notifier.stop()
        for store in stores:
            await store.close()
        await steady.stop()
        await flaky.stop()


class HeldReceiver(WebhookReceiver):
    """Holds each post until ``release`` is set, then answers 500: a send that outlives its claimer's lease."""

    def __init__(self):
        super().__init__(status=500)
        self.release = asyncio.Event()

    async def _hook(self, request: web.Request) -> web.Response:
        self.arrived.set()
        await self.release.wait()
        return web.Response(status=self.status)


async def test_a_notifier_whose_lease_ended_mid_send_leaves_the_next_claim_alone(backend):
    _, make = backend
    held = await HeldReceiver().start()
    writer, other = make(), make()
    writer.connection()
    location = {"url": writer.url} if writer.url else {"data_dir": writer.path.parent}
    store = Store(**location, pool_size=2)
    notifier = Notifier(store, [held.url], base_backoff=0.05, max_backoff=0.2, lease=0.3)
    try:
        await notifier.start()
        urgent(writer, [held.url], time.time())
        notifier.wake()
        await asyncio.wait_for(held.arrived.wait(), 10)
        await asyncio.sleep(0.4)  # the notifier's lease ends while its POST hangs
        (taken,) = outbox.claim(other, time.time(), lease_seconds=600, limit=10)  # another replica's claim
        held.release.set()
        deadline = time.monotonic() + 10
        while notifier.failed_attempts < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # its outcome written (or not)
        assert notifier.failed_attempts == 1 and not notifier._unsaved
        # The late failure did not make the row due while the other replica sends it.
        assert [row[3:5] for row in writer.outbox()] == [(0, taken.lease_until)]
    finally:
        held.release.set()
        await notifier.stop()
        await store.close()
        await held.stop()
