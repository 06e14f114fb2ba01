"""A batch retried against another replica is not counted twice (issue 18 part 2c), on a real PostgreSQL.

Two apps on one database stand for two replicas. The guarantee: a batch
resent as it was to another replica once the first has shared its digest
(a tick or two, ~0.5 s) is recognised; a retry within that time may count
twice (a race the design accepts: the request path never waits on the
database). A batch overlapping another only in part is deduplicated per
replica, not across.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from exporter.api.app import INGEST as INGEST_KEY
from exporter.api.shared_dedupe import SharedDedupe
from exporter.ingest.dedupe import DedupeWindow
from exporter.ingest.schemas import FeatureUsed
from exporter.store import seen_events
from exporter.store.database import Store
from tests.api_helpers import INGEST, SECRET, make_config, value

URL = "/api/v1/events"
N = 50


def batch(ids: list[str]) -> dict:
    return {"events": [{"type": "feature_used", "tier": "standard", "feature": "ocr", "outcome": "success", "id": i}
                       for i in ids]}


def accepted(registry: CollectorRegistry) -> float:
    return value(registry, "clary_exporter_events_total", type="feature_used", outcome="accepted")


async def replica(aiohttp_client, tmp_path, url: str, name: str):
    registry = CollectorRegistry()
    from exporter.server.app import create_app
    app = create_app(make_config(tmp_path / name, database_url=url), registry)
    return app, await aiohttp_client(app), registry


async def learnt(app, ids: list[str], timeout: float = 10.0) -> float:
    """Seconds until the replica's shared window holds the digest of the batch of ``ids`` (bounded)."""
    shared = app[INGEST_KEY].shared_dedupe
    digest = shared.window.digest(ids)
    start = time.monotonic()
    while digest not in shared.window.remote:
        assert time.monotonic() - start < timeout, "the other replica never learnt the batch"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_a_batch_retried_on_another_replica_is_not_counted_twice(aiohttp_client, tmp_path, database_url):
    app_a, a, _ = await replica(aiohttp_client, tmp_path, database_url, "a")
    app_b, b, reg_b = await replica(aiohttp_client, tmp_path, database_url, "b")
    ids = [uuid.uuid4().hex for _ in range(N)]
    first = await (await a.post(URL, json=batch(ids), headers=INGEST)).json()
    assert (first["accepted"], first["duplicates"]) == (N, 0)
    await asyncio.sleep(1.0)
    await learnt(app_b, ids)  # at once on a quiet machine; waits only when the CPUs are starved
    app_b[INGEST_KEY].backlog.fold()
    before = accepted(reg_b)
    retry = await (await b.post(URL, json=batch(ids), headers=INGEST)).json()
    assert (retry["accepted"], retry["duplicates"]) == (0, N)
    app_b[INGEST_KEY].backlog.fold()
    assert accepted(reg_b) == before == 0
    # A new batch is still counted on B, and B shares it back to A.
    other = [uuid.uuid4().hex for _ in range(3)]
    fresh = await (await b.post(URL, json=batch(other), headers=INGEST)).json()
    assert (fresh["accepted"], fresh["duplicates"]) == (3, 0)
    await learnt(app_a, other)
    back = await (await a.post(URL, json=batch(other), headers=INGEST)).json()
    assert (back["accepted"], back["duplicates"]) == (0, 3)


async def test_a_batch_overlapping_another_replicas_only_in_part_is_deduplicated_per_replica(
        aiohttp_client, tmp_path, database_url):
    """The shared window knows whole batches: a re-batched retry counts again on another replica, once."""
    app_a, a, _ = await replica(aiohttp_client, tmp_path, database_url, "a")
    app_b, b, _ = await replica(aiohttp_client, tmp_path, database_url, "b")
    ids = [uuid.uuid4().hex for _ in range(N)]
    assert (await (await a.post(URL, json=batch(ids), headers=INGEST)).json())["accepted"] == N
    await learnt(app_b, ids)
    rebatched = ids[:10] + [uuid.uuid4().hex for _ in range(2)]
    first = await (await b.post(URL, json=batch(rebatched), headers=INGEST)).json()
    assert (first["accepted"], first["duplicates"]) == (12, 0)
    again = await (await b.post(URL, json=batch(rebatched), headers=INGEST)).json()
    assert (again["accepted"], again["duplicates"]) == (0, 12)
    await learnt(app_a, rebatched)  # B shared it as a batch of its own: resent as it was, A recognises it whole
    on_a = await (await a.post(URL, json=batch(rebatched), headers=INGEST)).json()
    assert (on_a["accepted"], on_a["duplicates"]) == (0, 12)


async def test_only_hashes_of_ids_reach_the_table(aiohttp_client, tmp_path, database_url):
    """One row per tick, its BLOB the digests packed: the digests are there, the raw ids nowhere."""
    app, client, _ = await replica(aiohttp_client, tmp_path, database_url, "a")
    ids = [f"user-chosen-id-{i}-alice@example.com" for i in range(N)]
    assert (await client.post(URL, json=batch(ids), headers=INGEST)).status == 200
    shared = app[INGEST_KEY].shared_dedupe
    deadline = time.monotonic() + 10
    with psycopg.connect(database_url, autocommit=True) as conn:
        while not (rows := conn.execute("SELECT replica, digests FROM seen_events").fetchall()):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        dump = b" ".join(bytes(cell) if isinstance(cell, bytes) else str(cell).encode()
                         for row in conn.execute("SELECT * FROM seen_events").fetchall() for cell in row)
    assert len(rows) == 1  # one batch accepted before a tick: one row holding one digest
    (owner, packed), = rows
    assert owner == shared.replica
    assert bytes(packed) == shared.window.digest(ids)
    assert b"alice" not in dump and b"user-chosen" not in dump
    assert not any(i.encode() in dump for i in ids)


async def test_ingest_answers_and_counts_while_the_store_is_down(aiohttp_client, tmp_path, database_url,
                                                                 postgres_server):
    app, client, registry = await replica(aiohttp_client, tmp_path, database_url, "a")
    shared = app[INGEST_KEY].shared_dedupe
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with postgres_server.admin() as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            ids = [uuid.uuid4().hex for _ in range(N)]
            started = time.monotonic()
            body = await (await client.post(URL, json=batch(ids), headers=INGEST)).json()
            assert time.monotonic() - started < 2  # never waits on the database
            assert (body["accepted"], body["duplicates"]) == (N, 0)
            app[INGEST_KEY].backlog.fold()
            assert accepted(registry) == N
            await asyncio.sleep(1.0)  # ticks fail meanwhile; the ids wait in the queue
            assert list(shared.window.queue) == [shared.window.digest(ids)]
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    deadline = time.monotonic() + 15
    with psycopg.connect(database_url, autocommit=True) as conn:
        while (conn.execute("SELECT sum(octet_length(digests)) FROM seen_events").fetchone()[0] or 0) < 12:
            assert time.monotonic() < deadline, "the queued digest was not shared once the store came back"
            await asyncio.sleep(0.1)


@pytest.mark.sqlite_only
async def test_no_shared_window_on_sqlite(aiohttp_client, tmp_path):
    from exporter.server.app import create_app
    app = create_app(make_config(tmp_path), CollectorRegistry())
    assert app[INGEST_KEY].shared_dedupe is None


async def test_a_row_committed_late_below_the_cursor_is_still_learnt(database_url):
    """A seq is taken at insert, not at commit: the tail re-reads the gaps it skipped."""
    store = Store(url=database_url)
    try:
        await store.run(lambda db: db.connection())  # connecting migrates the database to the schema
        reader = SharedDedupe(store, DedupeWindow(), SECRET, replica="reader")
        writer = SharedDedupe(store, DedupeWindow(), SECRET, replica="writer")
        await reader.step()
        late, early = writer.window.digest(["late"]), writer.window.digest(["early"])
        with psycopg.connect(database_url) as slow:  # a transaction: its seq is taken now, committed later
            slow.execute("INSERT INTO seen_events (replica, seen_at, digests) VALUES ('writer', %s, %s)",
                         (time.time(), late))
            with psycopg.connect(database_url, autocommit=True) as fast:
                fast.execute("INSERT INTO seen_events (replica, seen_at, digests) VALUES ('writer', %s, %s)",
                             (time.time(), early))
            await reader.step()
            assert early in reader.window.remote
            assert late not in reader.window.remote
            assert reader.cursor.gaps  # the skipped seq, remembered
        await reader.step()
        assert late in reader.window.remote
        assert not reader.cursor.gaps
    finally:
        await store.close()


async def test_a_tick_writes_one_row_per_20000_digests_and_the_other_replica_learns_them_all(database_url):
    """Many batches in one tick: packed rows of at most ROW_DIGESTS, none lost, none learnt by their writer."""
    store = Store(url=database_url)
    try:
        await store.run(lambda db: db.connection())
        reader = SharedDedupe(store, DedupeWindow(max_ids=100_000), SECRET, replica="reader")
        writer = SharedDedupe(store, DedupeWindow(max_ids=100_000), SECRET, replica="writer")
        await reader.step()
        await writer.step()
        ids = [f"event-{i}" for i in range(45_000)]
        for event in [FeatureUsed(tier="standard", feature="ocr", outcome="success", id=i) for i in ids]:
            writer.window.admit([event], [event])  # batches of one event
        assert await writer.step() == 0 and not writer.window.queue
        sizes = await store.run(lambda db: [int(n) for n, in db.connection().execute(
            "SELECT octet_length(digests) FROM seen_events ORDER BY seq").fetchall()])
        assert sizes == [12 * seen_events.ROW_DIGESTS] * 2 + [12 * 5_000]
        assert await reader.step() == 45_000
        assert all(writer.window.digest([i]) in reader.window.remote for i in ids[::997] + ids[-3:])
    finally:
        await store.close()


async def test_batches_accepted_since_the_last_tick_are_shared_at_shutdown(aiohttp_client, tmp_path, database_url,
                                                                             monkeypatch):
    """The app's shutdown closes the shared window before the store: nothing accepted is left unshared."""
    monkeypatch.setattr("exporter.api.app.TICK_SECONDS", 3600.0)  # one tick at start, none after
    ticked = asyncio.Event()
    step = SharedDedupe.step

    async def step_and_say(self):
        try:
            return await step(self)
        finally:
            ticked.set()

    monkeypatch.setattr(SharedDedupe, "step", step_and_say)
    app, client, _ = await replica(aiohttp_client, tmp_path, database_url, "a")
    # The start-up tick may still be in the store when the app answers; a batch accepted then is shared by it.
    await asyncio.wait_for(ticked.wait(), 10)
    ids = [uuid.uuid4().hex for _ in range(N)]
    assert (await (await client.post(URL, json=batch(ids), headers=INGEST)).json())["accepted"] == N
    shared = app[INGEST_KEY].shared_dedupe
    assert shared.window.queue  # not shared yet: the next tick is an hour away
    await client.close()  # the app's cleanup: SharedDedupe.close, then the store's
    assert not shared.window.queue
    store = Store(url=database_url)
    try:
        reader = SharedDedupe(store, DedupeWindow(), SECRET, replica="reader")
        assert await reader.step() == 1
        assert shared.window.digest(ids) in reader.window.remote
    finally:
        await store.close()
