"""exporter.store.database: retention purge and user deletion remove exactly the right rows."""

from __future__ import annotations

import asyncio
import threading

import pytest

from exporter.store import outbox
from exporter.store.database import DAY, Database, FeedbackRecord
from exporter.store.health import StorageError
from tests import store_backend

NOW = 1_750_000_000.0  # a fixed "now"; purge takes it explicitly
U1, U2 = "a" * 64, "b" * 64


def feedback(age_days: float, user: str | None, text: str, urgent: bool = False) -> FeedbackRecord:
    return FeedbackRecord(tier="lite", type="bug" if urgent else "general", rating=1 if urgent else 4, text=text,
                          metadata=None, user_hash=user, urgent=urgent, created_at=NOW - age_days * DAY)


@pytest.fixture
def db(tmp_path):
    database = store_backend.database(tmp_path)
    yield database
    database.close()


def texts(db: Database) -> list[str]:
    return sorted(row["text"] for row in db.list_feedback(limit=500)[0])


@pytest.mark.sqlite_only
def test_file_is_created_on_first_write_only(tmp_path):
    db = Database(tmp_path / "sub" / "clary.db")
    assert db.list_feedback() == ([], None)
    assert db.purge(30, NOW) == {"feedback": 0, "notifications": 0, "activity": 0, "errors": 0}
    assert db.delete_user(U1) == {"feedback": 0, "notifications": 0, "activity": 0, "errors": 0, "consents": 0}
    assert db.opted_out() == set() and outbox.due_deliveries(db, NOW) == [] and db.set_opt_out(U1, False) is False
    assert not (tmp_path / "sub").exists()
    db.add_feedback(feedback(0, U1, "first"))
    assert (tmp_path / "sub" / "clary.db").exists()
    db.close()


def test_purge_removes_exactly_what_is_older_than_retention(db):
    for age, user, text in [(0, U1, "today"), (29.9, U2, "almost"), (30.1, U1, "just-over"), (400, None, "ancient"),
                            (31, U2, "old-urgent")]:
        db.add_feedback(feedback(age, user, text, urgent=text == "old-urgent"),
                        [("http://127.0.0.1:9/hook", "{}")] if text in ("old-urgent", "today") else [])
    today = int(NOW // DAY)
    db.add_activity({(U1, today, "lite", "upload"): 3, (U1, today - 29, "lite", "upload"): 1,
                     (U2, today - 31, "lite", "view"): 5, (U2, today - 400, "standard", "session"): 1})
    # The day 30 days back straddles the cutoff: it is kept until the whole day is older.
    db.add_activity({(U2, int((NOW - 30 * DAY) // DAY), "lite", "search"): 2})

    removed = db.purge(30, NOW)

    assert removed == {"feedback": 3, "notifications": 1, "activity": 2, "errors": 0}
    assert texts(db) == ["almost", "today"]
    assert [(r[0], r[1] - today, r[3]) for r in db.activity()] == [
        (U1, -29, "upload"), (U1, 0, "upload"), (U2, -30, "search")]
    assert [row[1] for row in db.outbox()] == [db.list_feedback(limit=500)[0][-1]["id"]]
    assert db.purge(30, NOW) == {"feedback": 0, "notifications": 0, "activity": 0, "errors": 0}


def test_purge_keeps_opt_outs(db):
    db.set_opt_out(U1, True, now=NOW - 1000 * DAY)
    db.purge(1, NOW)
    assert db.opted_out() == {U1}


def test_delete_user_removes_every_row_of_that_user_and_nothing_else(db):
    mine = [db.add_feedback(feedback(1, U1, f"u1-{i}", urgent=i == 0), [("http://127.0.0.1:9/a", "{}"),
                                                                          ("http://127.0.0.1:9/b", "{}")] if i == 0 else [])
            for i in range(3)]
    db.add_feedback(feedback(1, U2, "u2", urgent=True), [("http://127.0.0.1:9/a", "{}")])
    db.add_feedback(feedback(1, None, "anonymous"))
    today = int(NOW // DAY)
    db.add_activity({(U1, today, "lite", "upload"): 1, (U1, today - 1, "lite", "view"): 2,
                     (U2, today, "lite", "upload"): 7})
    db.set_opt_out(U1, True)

    assert db.delete_user(U1) == {"feedback": 3, "notifications": 2, "activity": 2, "errors": 0, "consents": 0}

    assert texts(db) == ["anonymous", "u2"]
    assert [(r[0], r[4]) for r in db.activity()] == [(U2, 7)]
    assert [row[2] for row in db.outbox()] == ["http://127.0.0.1:9/a"]
    assert all(row[1] != mine[0].id for row in db.outbox())
    assert db.opted_out() == {U1}  # deleting data does not start tracking the user again
    assert db.delete_user(U1) == {"feedback": 0, "notifications": 0, "activity": 0, "errors": 0, "consents": 0}


def test_activity_counts_add_up_per_day(db):
    key = (U1, 20000, "lite", "upload")
    db.add_activity({key: 2})
    db.add_activity({key: 3, (U1, 20000, "lite", "view"): 1})
    assert db.activity(U1) == [(U1, 20000, "lite", "upload", 5), (U1, 20000, "lite", "view", 1)]


def test_opt_out_is_persisted_and_reversible(tmp_path, db):
    assert db.set_opt_out(U1, True) is True
    assert db.set_opt_out(U1, True) is False
    db.close()
    reopened = store_backend.database(tmp_path)
    assert reopened.opted_out() == {U1}
    assert reopened.set_opt_out(U1, False) is True
    assert reopened.opted_out() == set()
    reopened.close()


def test_outbox_schedule_and_resume(db):
    record = db.add_feedback(feedback(0, U1, "urgent", urgent=True),
                             [("http://127.0.0.1:9/a", '{"n": 1}'), ("http://127.0.0.1:9/gone", '{"n": 2}')])
    due = outbox.due_deliveries(db, NOW)
    assert [(d.feedback_id, d.url, d.payload, d.attempts) for d in due] == [
        (record.id, "http://127.0.0.1:9/a", '{"n": 1}', 0), (record.id, "http://127.0.0.1:9/gone", '{"n": 2}', 0)]
    db.record_deliveries(failed=[(due[0].id, 1, NOW + 60, "HTTP 502")])
    assert [d.url for d in outbox.due_deliveries(db, NOW)] == ["http://127.0.0.1:9/gone"]
    assert outbox.next_delivery_at(db) == NOW
    # After a restart on SQLite (one replica): unconfigured URLs dropped, configured ones due now. On
    # PostgreSQL nothing changes (exporter.store.outbox): another replica may hold the row's lease, or
    # still have the URL this one lacks.
    if db.dialect == "sqlite":
        assert db.resume_deliveries(["http://127.0.0.1:9/a"], NOW) == (1, 1)
        (row,) = db.outbox()
        assert row[2:6] == ("http://127.0.0.1:9/a", 1, NOW, "HTTP 502")
    else:
        assert db.resume_deliveries(["http://127.0.0.1:9/a"], NOW) == (0, 0)
        row, gone = db.outbox()
        assert (row[2:6], gone[2:5]) == (("http://127.0.0.1:9/a", 1, NOW + 60, "HTTP 502"),
                                         ("http://127.0.0.1:9/gone", 0, NOW))
        db.record_deliveries(done=[gone[0]])
    db.record_deliveries(done=[row[0]])
    assert db.outbox() == [] and outbox.next_delivery_at(db) is None


def test_delivery_outcomes_are_recorded_together(db):
    record = db.add_feedback(feedback(0, U1, "urgent", urgent=True),
                             [(f"http://127.0.0.1:9/{n}", "{}") for n in range(3)])
    ids = [d.id for d in outbox.due_deliveries(db, NOW)]
    db.record_deliveries(done=ids[:2], failed=[(ids[2], 7, NOW + 300, "x" * 900)])
    (row,) = db.outbox()
    assert row[:6] == (ids[2], record.id, "http://127.0.0.1:9/2", 7, NOW + 300, "x" * 500)


def test_a_failed_transaction_leaves_nothing_behind(db):
    db.add_feedback(feedback(0, U1, "one"))
    record = feedback(0, U1, "two")
    with pytest.raises(Exception):
        # The outbox insert fails (NULL url): the feedback row of the same transaction is rolled back.
        db.add_feedback(record, [(None, "{}")])
    assert texts(db) == ["one"]
    assert db.outbox() == []


async def test_store_runs_sql_off_the_event_loop(tmp_path):
    store = store_backend.store(tmp_path)

    def thread_name(db: Database) -> str:
        return threading.current_thread().name

    record = await store.add_feedback(feedback(0, U1, "async"))
    rows, _ = await store.list_feedback()
    assert [r["id"] for r in rows] == [record.id]
    threads = await asyncio.gather(*(store.run(thread_name) for _ in range(4)))
    assert all(t.startswith("clary-store") and t != threading.current_thread().name for t in threads), threads
    results = await asyncio.gather(*(store.add_feedback(feedback(0, U2, f"c{i}")) for i in range(20)))
    assert len({r.id for r in results}) == 20
    assert await store.count("feedback") == 21
    await store.close()


@pytest.mark.sqlite_only
def test_newer_schema_is_refused(tmp_path):
    db = Database(tmp_path / "clary.db")
    db.connection().execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StorageError, match="schema version 99 is newer"):
        Database(tmp_path / "clary.db").connection()
