"""Distinct users and licenses across replicas on one PostgreSQL (exporter.api.shared_sketches).

Three replicas each see an overlapping half of 10,000 users (and of 300
licenses): every replica must expose the deployment's union, not its own
share (5,000) nor the sum (15,000); a replica whose store is down keeps
exposing its last union.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from exporter.api.shared_sketches import SharedSketches, merge
from exporter.catalog import TIERS
from exporter.instrument.sketches import ActiveLicenses, ActiveUsers
from exporter.store import sketches as sketch_store
from exporter.store.database import Database, Store
from exporter.store.health import StorageUnavailable
from tests.support import free_port

NOW = 1_750_000_000.0
USERS, LICENSES = 10_000, 300


def hashed(kind: str, i: int) -> str:
    return hashlib.sha256(f"{kind}-{i}".encode()).hexdigest()


class Replica:
    """One replica's collectors and its shared-sketch task, on a fixed clock."""

    def __init__(self, url: str, name: str, clock):
        self.users = ActiveUsers(clock)
        self.licenses = ActiveLicenses(clock)
        self.store = Store(url=url, pool_size=1)
        self.task = SharedSketches(self.store, [self.users, self.licenses], replica=name, clock=clock)

    def see(self, index: int) -> None:
        """Users [2500 i, 2500 i + 5000) and licenses [75 i, 75 i + 150): halves that overlap, union all."""
        self.users.seen_all((TIERS[u % 3], hashed("user", u)) for u in range(2500 * index, 2500 * index + 5000))
        for lic in range(75 * index, 75 * index + 150):
            self.licenses.seen(TIERS[lic % 3], hashed("license", lic))

    def users_exposed(self, window: str) -> float:
        [family] = self.users.collect()
        return sum(s.value for s in family.samples if s.labels["window"] == window)

    def licenses_exposed(self) -> float:
        [family] = self.licenses.collect()
        return sum(s.value for s in family.samples)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def replicas(database_url):
    now = [NOW]
    group = [Replica(database_url, f"r{i}", lambda: now[0]) for i in range(3)]
    for index, replica in enumerate(group):
        replica.see(index)
    yield group, now
    for replica in group:
        run(replica.store.close())


def test_every_replica_exposes_the_union_of_all_three(replicas):
    group, _ = replicas
    # Alone, each replica counts its own half: max over replicas is a lower bound (~5,000 of 10,000).
    for replica in group:
        assert replica.users_exposed("1h") == pytest.approx(5000, rel=0.02)
        assert replica.licenses_exposed() == 150
    for replica in group:  # the first one publishes, the last one already reads the other two
        run(replica.task.tick())
    assert run(group[0].task.tick()) > 0  # now the first reads the others' buckets too
    run(group[1].task.tick())
    for replica in group:
        for window in ("5m", "1h", "24h"):
            assert replica.users_exposed(window) == pytest.approx(USERS, rel=0.02), window
        assert replica.licenses_exposed() == pytest.approx(LICENSES, rel=0.02)
    # Per tier too: the tiers split users and licenses by id.
    [family] = group[2].users.collect()
    per_tier = {s.labels["tier"]: s.value for s in family.samples if s.labels["window"] == "1h"}
    assert per_tier["unknown"] == 0
    assert all(per_tier[t] == pytest.approx(USERS / 3, rel=0.03) for t in TIERS), per_tier


def test_local_activity_after_the_merge_counts_at_once(replicas):
    group, _ = replicas
    for replica in group * 2:
        run(replica.task.tick())
    group[0].users.seen_all(("lite", hashed("new", i)) for i in range(1000))
    assert group[0].users_exposed("1h") == pytest.approx(USERS + 1000, rel=0.02)  # before any tick
    run(group[0].task.tick())
    run(group[1].task.tick())
    assert group[1].users_exposed("1h") == pytest.approx(USERS + 1000, rel=0.02)


def test_buckets_out_of_the_window_stop_counting_and_expire(replicas, database_url):
    group, now = replicas
    for replica in group * 2:
        run(replica.task.tick())
    now[0] = NOW + 3 * 3600  # three hours on: minute buckets out of 5m/1h (and kept only 1 h more), hours in 24h
    run(group[0].task.tick())
    assert group[0].users_exposed("1h") == 0 and group[0].users_exposed("5m") == 0
    assert group[0].users_exposed("24h") == pytest.approx(USERS, rel=0.02)
    db = Database(url=database_url)
    try:
        minute = int(NOW // 60)
        assert sketch_store.since(db, {("users", 60): minute - 1}) == []  # expired: window + an hour margin
        assert sketch_store.since(db, {("users", 3600): 0})
    finally:
        db.close()


def test_a_replica_whose_store_is_down_keeps_exposing_and_catches_up(replicas, database_url):
    group, now = replicas
    for replica in group * 2:
        run(replica.task.tick())
    first = group[0]
    working, first.task.store = first.task.store, Store(url=f"postgresql://clary:x@127.0.0.1:{free_port()}/none")
    now[0] = NOW + 120  # a new minute: a bucket only this replica holds
    first.users.seen_all(("standard", hashed("late", i)) for i in range(500))
    with pytest.raises(StorageUnavailable):
        run(first.task.tick())
    assert first.users_exposed("1h") == pytest.approx(USERS + 500, rel=0.02)  # last union plus its own
    assert first.licenses_exposed() == pytest.approx(LICENSES, rel=0.02)
    run(first.task.store.close())
    now[0] = NOW + 300  # two more minutes: the late bucket is no longer "current or previous"
    first.task.store = working
    run(first.task.tick())
    run(group[2].task.tick())
    assert group[2].users_exposed("1h") == pytest.approx(USERS + 500, rel=0.02)


def test_shutdown_publishes_what_the_last_tick_missed(replicas):
    group, _ = replicas
    for replica in group * 2:
        run(replica.task.tick())
    group[1].users.seen_all(("professional", hashed("last", i)) for i in range(800))
    run(group[1].task.close())
    run(group[0].task.tick())
    assert group[0].users_exposed("1h") == pytest.approx(USERS + 800, rel=0.02)


def test_merge_skips_unreadable_rows_and_folds_unknown_tiers():
    sketch = ActiveUsers(lambda: NOW)
    sketch.seen("lite", "x")
    rows = [("users", "gold", 60, slot, "r", data) for _, _, slot, data in sketch.changed(NOW)]
    rows.append(("users", "lite", 60, int(NOW // 60), "r", b"not a sketch"))
    merged = merge(rows, {"users": ActiveUsers.windows}, NOW)
    assert set(merged["users"]) == {("unknown", "5m"), ("unknown", "1h")}
    assert merged["users"]["unknown", "1h"].get_estimate() == pytest.approx(1)


def test_no_task_without_a_shared_store(tmp_path):
    class Recorder:
        active_users, active_licenses = ActiveUsers(), ActiveLicenses()

    assert SharedSketches.of(Store(tmp_path), Recorder()) is None
    assert SharedSketches.of(Store(url="postgresql://clary@127.0.0.1/x"), Recorder()) is not None


async def test_two_apps_on_one_database_expose_the_union(aiohttp_client, database_url, tmp_path):
    """The wiring: create_app on PostgreSQL starts the task; its tick merges what the other app saw."""
    from prometheus_client import CollectorRegistry

    from exporter.api.app import INGEST as INGEST_KEY
    from tests.api_helpers import INGEST, app_client, sample

    apps = []
    for index, users in enumerate((range(60), range(30, 90))):
        registry = CollectorRegistry()
        app, client = await app_client(aiohttp_client, tmp_path / f"r{index}", registry, database_url=database_url)
        events = [{"type": "user_action", "tier": "lite", "action": "export", "user_id": f"user-{u}"} for u in users]
        assert (await client.post("/api/v1/events", json={"events": events}, headers=INGEST)).status == 200
        await app[INGEST_KEY].fold_backlog()
        apps.append((app[INGEST_KEY], registry))
    for api, _ in apps + apps:
        assert api.shared_sketches is not None
        await api.shared_sketches.tick()
    for _, registry in apps:
        assert sample(registry, "clary_active_users", {"tier": "lite", "window": "1h"}) == pytest.approx(90, abs=1)


@pytest.mark.sqlite_only
async def test_an_app_on_sqlite_runs_no_shared_sketches(aiohttp_client, tmp_path):
    from prometheus_client import CollectorRegistry

    from exporter.api.app import INGEST as INGEST_KEY
    from tests.api_helpers import app_client

    app, _ = await app_client(aiohttp_client, tmp_path, CollectorRegistry())
    assert app[INGEST_KEY].store.db.dialect == "sqlite" and app[INGEST_KEY].shared_sketches is None


def test_licenses_stay_exact_until_another_replica_has_published():
    """A lone replica on PostgreSQL keeps the exact count (and its eviction limit), not an estimate."""
    licenses = ActiveLicenses(lambda: NOW, limit=2)
    for name in ("a", "b", "c"):
        licenses.seen("lite", name)
    licenses.merged({})
    [family] = licenses.collect()
    assert {s.labels["tier"]: s.value for s in family.samples}["lite"] == 2
