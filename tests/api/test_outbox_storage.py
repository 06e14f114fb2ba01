"""The webhook outbox when the store cannot write (disk full, read-only): nothing is sent twice.

Issue 19, item 7: with the disk full each delivery succeeded but its outbox
row could not be deleted, so it was sent again about once a second (30
deliveries in 10 s). Here the store's writes fail the way SQLite fails on a
full disk; benchmarks/security/notifications.py does it with a real full
file system.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest
from aiohttp import web

from exporter.api.notify import Notifier, summary
from exporter.store.database import Database, FeedbackRecord, Store, new_feedback_id
from tests.api_helpers import WebhookReceiver, database


async def read_only(store: Store, on: bool = True) -> None:
    """Make the store's own connection fail every write with SQLite's SQLITE_READONLY, as a read-only
    remount does (``PRAGMA query_only``); other connections, like the test's, still write."""
    def pragma():
        store.db.connection().execute(f"PRAGMA query_only = {int(on)}")

    await asyncio.get_running_loop().run_in_executor(store._pool(), pragma)


def _urgent(db: Database, urls: list[str], text: str = "crash on save") -> str:
    record = FeedbackRecord(tier="lite", type="bug", rating=1, text=text, metadata=None, user_hash=None,
                            urgent=True, created_at=time.time(), id=new_feedback_id())
    payload = json.dumps(summary({**record.as_dict(), "created_at": "2025-06-15T09:12:03.064Z"}))
    db.add_feedback(record, [(url, payload) for url in urls])
    return record.id


async def _until(check, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class GatedReceiver(WebhookReceiver):
    """Holds each answer until ``gate`` is set: the test breaks the store after the claim (a write), before
    the outcome is recorded."""

    def __init__(self, status: int):
        super().__init__(status=status)
        self.gate = asyncio.Event()

    async def _hook(self, request):
        self.received.append(await request.json())
        self.arrived.set()
        await self.gate.wait()
        return web.json_response({"ok": True}, status=self.status)


async def break_after_claim(store: Store, receiver: GatedReceiver, count: int = 1) -> None:
    """Once ``count`` requests are in flight (their rows claimed): the store read-only, then the answers."""
    await receiver.wait(count)
    await read_only(store)
    receiver.gate.set()


@pytest.fixture
async def receiver():
    hook = await GatedReceiver(status=503).start()
    yield hook
    await hook.stop()


@pytest.mark.sqlite_only  # the fault is SQLite's PRAGMA query_only on the store's connection
async def test_a_delivered_notification_is_not_resent_while_its_row_cannot_be_deleted(
        tmp_path, receiver):
    receiver.status = 200
    db = database(tmp_path)
    store = Store(tmp_path)
    notifier = Notifier(store, [receiver.url], base_backoff=0.01, max_backoff=0.05)
    await notifier.start()  # nothing pending yet
    try:
        _urgent(db, [receiver.url])
        notifier.wake()
        await break_after_claim(store, receiver)  # the disk fills while the receiver answers
        # (The exporter before this fix sent it again every base_backoff: a second delivery.)
        await _until(lambda: len(receiver.received) > 1 or getattr(notifier, "storage_failures", 0) >= 5,
                     "five failed tries to record the delivery")
        assert len(receiver.received) == 1  # delivered once: never again while the store cannot write
        assert db.outbox() != []
        await read_only(store, False)
        notifier.wake()
        await _until(lambda: db.outbox() == [], "the delivered row deleted")
        assert len(receiver.received) == 1
    finally:
        await notifier.stop()
        await store.close()
        db.close()


@pytest.mark.sqlite_only  # the fault is SQLite's PRAGMA query_only on the store's connection
async def test_failed_attempts_keep_their_backoff_when_they_cannot_be_recorded(tmp_path, receiver):
    db = database(tmp_path)
    store = Store(tmp_path)
    notifier = Notifier(store, [receiver.url], base_backoff=10.0, max_backoff=100.0, rng=random.Random(1))
    await notifier.start()  # nothing pending yet
    try:
        _urgent(db, [receiver.url])
        (delivery_id,) = [row[0] for row in db.outbox()]
        notifier.wake()
        await break_after_claim(store, receiver)  # a remount while the receiver answers
        await _until(lambda: delivery_id in notifier._unsaved, "the outcome held in memory")
        held = notifier._unsaved[delivery_id]
        assert held.attempts == 1 and not held.delivered and held.next_at > time.time() + 7  # ~10 s, not 1 s
        for _ in range(5):  # the row is due in the database, but its retry is 10 s away
            assert await notifier.drain() == 0
        assert len(receiver.received) == 1
        await read_only(store, False)
        assert await notifier.drain() == 0
        assert notifier._unsaved == {}
        row = db.outbox()[0]
        assert (row[3], row[5]) == (1, "HTTP 503") and row[4] == pytest.approx(held.next_at)
    finally:
        await notifier.stop()
        await store.close()
        db.close()


@pytest.mark.sqlite_only  # the fault is SQLite's PRAGMA query_only on the store's connection
async def test_nothing_new_is_claimed_while_outcomes_cannot_be_recorded(tmp_path, receiver):
    receiver.status = 200
    db = database(tmp_path)
    store = Store(tmp_path)
    notifier = Notifier(store, [receiver.url], base_backoff=5.0)  # the loop sleeps while the test drains
    await notifier.start()
    try:
        _urgent(db, [receiver.url], "one")
        _urgent(db, [receiver.url], "two")
        notifier.wake()
        await break_after_claim(store, receiver, 2)
        await _until(lambda: len(notifier._unsaved) == 2, "two outcomes held")
        _urgent(db, [receiver.url], "three")  # written by another connection, e.g. before the disk filled
        assert await notifier.drain() == 0
        assert len(receiver.received) == 2
        await read_only(store, False)
        assert await notifier.drain() == 1  # recorded the two, then sent the third
        assert [p["feedback"]["text"] for p in receiver.received] == ["one", "two", "three"]
    finally:
        await notifier.stop()
        await store.close()
        db.close()


def test_backoff_stays_capped_after_thousands_of_attempts():
    """A receiver down for days: 2 ** attempts must not overflow into an error that stops the backoff."""
    notifier = Notifier(store=None, urls=[], base_backoff=1.0, max_backoff=300.0, rng=random.Random(3))
    for attempts in (1100, 5000, 10**6):
        assert 240.0 <= notifier.backoff(attempts) <= 360.0
