"""The cross-replica dedupe window (issue 18 part 2c): its cost on the events path and how fast a retry is recognised.

In one process, on a real PostgreSQL 15 (tests/postgres.py starts a throwaway one):

- throughput: ``IngestApi.ingest`` over batches of 100 events with unique ids,
  pre-built bodies, background tasks running; events per CPU second of the
  process, every thread counted, up to the moment the shared window's queue
  is empty (its ticks' inserts and tail reads included, one digest a batch;
  PostgreSQL's own CPU not, it is another machine in production):
  ``local`` = the store on SQLite (no shared window, as before),
  ``shared`` = the store on PostgreSQL with the shared window. Rounds
  alternate the order; reported: medians of events/s and of the per-round
  ratio shared/local.
- recognition: a batch accepted by replica A, then replica B polled every
  5 ms until its window holds the batch's digest: p50/p99 of the delay. Both
  replicas share this process (and its GIL), as the API tests do.

Usage: flock /tmp/clary-bench.lock env PYTHONPATH=. .venv/bin/python -m benchmarks.shared_dedupe [--rounds 7]
Results: benchmarks/results/shared_dedupe.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Self

from prometheus_client import CollectorRegistry

from benchmarks.ingest_throughput import EVENTS
from exporter.api.app import INGEST
from exporter.ingest.shared_dedupe import DIGEST_BYTES
from exporter.server.app import create_app
from tests import postgres
from tests.api_helpers import make_config

RESULT = Path(__file__).resolve().parent / "results" / "shared_dedupe.md"
BATCH = 100


def bodies(count: int) -> list[bytes]:
    return [json.dumps({"events": [dict(EVENTS[i % len(EVENTS)], id=uuid.uuid4().hex) for i in range(BATCH)]}).encode()
            for _ in range(count)]


class Replica:
    """One exporter app's API with its background tasks running (no HTTP: the events path itself)."""

    def __init__(self, data_dir: Path, url: str | None):
        self.app = create_app(make_config(data_dir, database_url=url), CollectorRegistry())
        self.api = self.app[INGEST]
        self._life = None

    async def __aenter__(self) -> Self:
        self._life = self.api.lifecycle(self.app)
        await self._life.__anext__()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._life.aclose()


async def throughput(replica: Replica, batches: list[bytes]) -> float:
    """Events per CPU second of this process (every thread: the store thread's inserts count), until shared."""
    ingest = replica.api.ingest
    shared = replica.api.shared_dedupe
    start = time.process_time()
    for body in batches:
        result = ingest(body)
        assert result.accepted == BATCH, result
        await asyncio.sleep(0)  # the loop runs its other work (the ticks, the backlog fold) between batches
    deadline = time.monotonic() + 30
    while shared is not None and shared.window.queue:  # until the last digests are in the store
        assert time.monotonic() < deadline, "the shared window's queue never drained"
        await asyncio.sleep(0.01)
    return len(batches) * BATCH / (time.process_time() - start)


async def recognition(a: Replica, b: Replica, samples: int) -> list[float]:
    delays = []
    window = b.api.shared_dedupe.window
    for _ in range(samples):
        body = bodies(1)[0]
        digest = window.digest([event["id"] for event in json.loads(body)["events"]])
        a.api.ingest(body)
        start = time.perf_counter()
        deadline = time.monotonic() + 30
        while digest not in window.remote:
            assert time.monotonic() < deadline, "replica B never learnt the batch"
            await asyncio.sleep(0.005)
        delays.append(time.perf_counter() - start)
        await asyncio.sleep(0.037)  # spread the start against the tick phase
    return delays


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(rounds: int, batches: int, samples: int) -> str:
    server = postgres.server()
    url = server.fresh_database()
    with tempfile.TemporaryDirectory() as tmp:
        local_rates, shared_rates, ratios = [], [], []
        async with Replica(Path(tmp) / "local", None) as local, Replica(Path(tmp) / "a", url) as a, \
                Replica(Path(tmp) / "b", url) as b:
            await throughput(local, bodies(50))  # warm up both
            await throughput(a, bodies(50))
            for n in range(rounds):
                work = {"local": bodies(batches), "shared": bodies(batches)}
                order = ("local", "shared") if n % 2 == 0 else ("shared", "local")
                rate = {}
                for name in order:
                    rate[name] = await throughput(local if name == "local" else a, work[name])
                    await asyncio.sleep(0.5)  # the shared ticks catch up outside the other variant's timing
                local_rates.append(rate["local"])
                shared_rates.append(rate["shared"])
                ratios.append(rate["shared"] / rate["local"])
            delays = await recognition(a, b, samples)
            rows, size = await a.api.store.run(lambda db: db.connection().execute(
                "SELECT count(*), sum(octet_length(digests)) FROM seen_events").fetchone())
    server.drop_database(url)
    return "\n".join([
        "# Cross-replica dedupe window (benchmarks/shared_dedupe.py)",
        "",
        (f"{platform.machine()}, Python {platform.python_version()}, PostgreSQL 15 (local), {rounds} rounds of "
         f"{batches} batches x {BATCH} events per variant."),
        "",
        "| variant | events per CPU second (median) |",
        "|---|---|",
        f"| local (SQLite store, no shared window) | {statistics.median(local_rates):,.0f} |",
        f"| shared (PostgreSQL store, shared window) | {statistics.median(shared_rates):,.0f} |",
        "",
        (f"shared / local, per round: median {statistics.median(ratios):.3f}, "
         f"min {min(ratios):.3f}, max {max(ratios):.3f}"),
        "",
        (f"Recognition on replica B of a batch accepted on A ({samples} batches): "
         f"p50 {pct(delays, 0.5) * 1000:.0f} ms, p99 {pct(delays, 0.99) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms."),
        f"Rows in seen_events at the end: {rows:,}, holding {int(size or 0) // DIGEST_BYTES:,} digests.",
        "",
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    report = asyncio.run(main(args.rounds, args.batches, args.samples))
    RESULT.write_text(report)
    print(report)
