"""The store on PostgreSQL vs SQLite, through the real HTTP API, in one run.

Each backend is its own exporter process (``python -m exporter.cli``, the
same config file) on 127.0.0.1, started once for the whole run and warmed up:

  sqlite       the embedded default: clary.db in a temp dir (WAL, synchronous=FULL)
  postgresql   a throwaway PostgreSQL 15 (tests/postgres.py, Debian's binaries) started
               by this benchmark with fsync, synchronous_commit and full_page_writes ON:
               as durable as the SQLite file, the number to compare
  pg-nofsync   the same server settings the test suite uses (fsync, synchronous_commit,
               full_page_writes off): what the tests see, not a production setting

Two loads, each bounded in count, measured in every round for every backend
(order alternating from round to round; this shared 2-core machine drifts,
so the ratio within a round is what is reported, median over the rounds):

  feedback   ``--feedback`` POST /api/v1/feedback (non-urgent, 201 = committed to
             the store), from ``--clients`` concurrent keep-alive connections
  events     ``--batches`` POST /api/v1/events, batches of 100 events with unique
             ids (the ingest benchmark's mix: counters, histograms, per-user
             activity), from ``--clients`` concurrent connections

Also reported: CPU per event, the exporter process plus (PostgreSQL) every
process of its server, from the first batch to SETTLE after the last, so
write-behind work is counted wherever it runs; steadier than the rates on a
shared machine. ``--baseline-tree DIR`` adds ``postgresql@baseline``: that
checkout's exporter on the durable server, in the same rounds.

Target (issue 18): the events path, which never waits on the store, loses
no more than 10 % on PostgreSQL (events/s ratio >= 0.90).

Usage: flock /tmp/clary-bench.lock python -m benchmarks.store_backends [--rounds 7] [--clients 8]
       [--feedback 500] [--batches 1000] [--baseline-tree DIR]          (``make bench-store``)
Results: benchmarks/results/store_backends.md (store_backends_before_after.md with --baseline-tree)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import aiohttp
import psutil
import yaml

from benchmarks import baseline
from benchmarks.ingest_throughput import EVENTS
from tests import postgres

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "store_backends.md"
BACKENDS = ("sqlite", "postgresql", "pg-nofsync")
BATCH = 100
INGEST_TOKEN = "bench-store-ingest-token-0123456789"
API_KEY = "bench-store-api-key-professional"
SETTLE = 0.5  # seconds after each load: write-behind work ends before the next backend is measured
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
FEEDBACK = {"type": "feature_request", "rating": 4, "feature": "table_extraction",
            "text": "Please keep the column widths when exporting tables to xlsx."}


def _config(path: Path) -> Path:
    config = {
        "hmac_secret": "bench-store-hmac-secret-0123456789",
        "ingest_tokens": [INGEST_TOKEN],
        "api_keys": {API_KEY: {"tier": "professional", "user": "bench-user"}},
        "feedback_rate_per_minute": 0,  # no limit: the store is what is measured
        "collectors": {"system": False, "gpu": False},
        "log_level": "warning",
    }
    path.write_text(yaml.safe_dump(config))
    return path


class Exporter:
    """One exporter process on one backend, on a free loopback port."""

    def __init__(self, name: str, workdir: Path, config: Path, database_url: str | None, tree: Path = ROOT,
                 server: postgres.Server | None = None):
        self.name = name
        self.server = server
        self.port = postgres._free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLARY_")}
        env["PYTHONPATH"] = str(tree)  # its own exporter package (--baseline-tree), not the editable install
        if database_url:
            env["CLARY_DATABASE_URL"] = database_url  # not on the command line: it holds a password
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "exporter.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "exporter.cli", "--config", str(config), "--data-dir", str(workdir / "data"),
             "--listen-address", f"127.0.0.1:{self.port}"],
            cwd=tree, env=env, stdin=subprocess.DEVNULL, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(f"{self.base}/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name}: exporter not ready; log tail:\n{self.log.read_text()[-2000:]}")

    def cpu(self) -> float:
        """CPU seconds so far of this exporter and, on PostgreSQL, of its server's processes (the work
        SQLite does inside the exporter process happens there)."""
        procs = [psutil.Process(self.process.pid)]
        if self.server is not None:
            postmaster = psutil.Process(int((self.server.data_dir / "postmaster.pid").read_text().split()[0]))
            procs += [postmaster, *postmaster.children(recursive=True)]
        total = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


async def _drive(count: int, clients: int, post) -> float:
    """``count`` requests over ``clients`` concurrent workers; wall seconds."""
    remaining = iter(range(count))
    started = time.perf_counter()

    async def worker() -> None:
        for n in remaining:
            await post(n)

    await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - started


async def feedback_rate(session: aiohttp.ClientSession, exporter: Exporter, count: int, clients: int) -> float:
    body = json.dumps(FEEDBACK).encode()
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}

    async def post(_: int) -> None:
        async with session.post(f"{exporter.base}/api/v1/feedback", data=body, headers=headers) as resp:
            await resp.read()
            if resp.status != 201:
                raise RuntimeError(f"{exporter.name}: feedback answered {resp.status}")

    return count / await _drive(count, clients, post)


class Batches:
    """Batch bodies whose event ids never repeat within the run (a repeat would be skipped as a duplicate)."""

    def __init__(self) -> None:
        self.parts = [json.dumps({**event, "id": "ID"}).split('"ID"') for event in EVENTS]
        self.serial = 0

    def next(self) -> bytes:
        self.serial += 1
        prefix = f'"s{self.serial}-e'
        items = [head + prefix + f'{i}"' + tail for i, (head, tail) in
                 ((i, self.parts[i % len(self.parts)]) for i in range(BATCH))]
        return ('{"events": [' + ",".join(items) + "]}").encode()


async def events_rate(session: aiohttp.ClientSession, exporter: Exporter, batches: Batches, count: int,
                      clients: int) -> float:
    bodies = [batches.next() for _ in range(count)]  # built before the clock starts
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}

    async def post(n: int) -> None:
        async with session.post(f"{exporter.base}/api/v1/events", data=bodies[n], headers=headers) as resp:
            payload = await resp.read()
            if resp.status != 200 or json.loads(payload)["accepted"] != BATCH:
                raise RuntimeError(f"{exporter.name}: events answered {resp.status} {payload[:200]!r}")

    return count * BATCH / await _drive(count, clients, post)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _spread(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{ordered[0]:.2f}-{ordered[-1]:.2f}"


async def measure(args, exporters: dict[str, Exporter]) -> dict[str, dict[str, list[float]]]:
    rounds: dict[str, dict[str, list[float]]] = {b: {"feedback": [], "events": [], "cpu": []} for b in exporters}
    batches = Batches()
    connector = aiohttp.TCPConnector(limit=args.clients * len(exporters))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        for exporter in exporters.values():
            await exporter.wait_ready(session)
        for exporter in exporters.values():  # warm-up: connections, caches, first-seen series; not counted
            await feedback_rate(session, exporter, max(20, args.feedback // 10), args.clients)
            await events_rate(session, exporter, batches, max(10, args.batches // 10), args.clients)
        order = list(exporters)
        for r in range(args.rounds):
            for name in order if r % 2 == 0 else reversed(order):
                fb = await feedback_rate(session, exporters[name], args.feedback, args.clients)
                await asyncio.sleep(SETTLE)
                cpu = exporters[name].cpu()
                ev = await events_rate(session, exporters[name], batches, args.batches, args.clients)
                await asyncio.sleep(SETTLE)  # counted: the write-behind work of these events
                cpu = (exporters[name].cpu() - cpu) / (args.batches * BATCH) * 1e6
                rounds[name]["feedback"].append(fb)
                rounds[name]["events"].append(ev)
                rounds[name]["cpu"].append(cpu)
                print(f"round {r + 1} {name:>10}: {fb:>8,.0f} feedback/s  {ev:>9,.0f} events/s  "
                      f"{cpu:.1f} us CPU per event", flush=True)
    return rounds


def report(args, rounds: dict[str, dict[str, list[float]]], settings: dict[str, dict[str, str]]) -> str:
    def ratios(name: str, load: str) -> list[float]:
        """Per round, this backend vs SQLite; for CPU per event, SQLite's / this one (higher is better)."""
        pairs = zip(rounds[name][load], rounds["sqlite"][load])
        return [b / a if load == "cpu" else a / b for a, b in pairs]

    lines = [
        (f"Store backends through the HTTP API, {datetime.date.today().isoformat()}: "
         f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
         f"{args.rounds} rounds, {args.clients} concurrent connections; per round {args.feedback} feedback posts "
         f"and {args.batches} batches of {BATCH} events per backend."),
        "Ratios are medians of the per-round ratio to SQLite (backends run back to back, order alternating).",
        "",
        "CPU per event: the exporter process plus, on PostgreSQL, every process of its server, from the first",
        f"batch to {SETTLE} s after the last (write-behind included); its ratio is SQLite's CPU / this backend's.",
        "",
        ("| backend | server settings | feedback inserts/s | vs SQLite | events/s | vs SQLite "
         "| CPU per event (µs) | vs SQLite |"),
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in rounds:
        fb, ev, cpu = (_median(rounds[name][load]) for load in ("feedback", "events", "cpu"))
        vs_fb = "1.00x" if name == "sqlite" else f"{_median(ratios(name, 'feedback')):.2f}x"
        vs_ev = "1.00x" if name == "sqlite" else f"{_median(ratios(name, 'events')):.2f}x"
        vs_cpu = "1.00x" if name == "sqlite" else f"{_median(ratios(name, 'cpu')):.2f}x"
        shown = ", ".join(f"{k}={v}" for k, v in settings[name].items())
        lines.append(f"| {name} | {shown} | {fb:,.0f} | {vs_fb} | {ev:,.0f} | {vs_ev} | {cpu:.1f} | {vs_cpu} |")
    lines.append("")
    for name in rounds:
        if name != "sqlite":
            lines.append(f"Per round, {name} / sqlite: feedback "
                         + ", ".join(f"{x:.2f}" for x in ratios(name, "feedback")) + "; events "
                         + ", ".join(f"{x:.2f}" for x in ratios(name, "events")) + "; CPU per event "
                         + ", ".join(f"{x:.2f}" for x in ratios(name, "cpu")) + ".")
    if args.baseline_tree:
        lines += ["", (f"postgresql{baseline.SUFFIX}: the exporter of {args.baseline_tree} on the durable server "
                       "(its own database), measured in the same rounds.")]
    if "postgresql" in rounds:
        ratio = _median(ratios("postgresql", "events"))
        lines += ["", f"Target: events/s on PostgreSQL (durable settings) >= 0.90x SQLite. Measured: {ratio:.2f}x"
                  + (" (target met)" if ratio >= 0.9 else " (target not met)")
                  + f", rounds {_spread(ratios('postgresql', 'events'))}."]
    return "\n".join(lines) + "\n"


def _server_settings(srv: postgres.Server) -> dict[str, str]:
    with srv.admin() as conn:
        return {k: conn.execute(f"SHOW {k}").fetchone()[0] for k in DURABLE}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--clients", type=int, default=8, help="concurrent keep-alive connections")
    parser.add_argument("--feedback", type=int, default=500, help="feedback posts per backend per round")
    parser.add_argument("--batches", type=int, default=1000, help="event batches per backend per round")
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated subset of {BACKENDS}")
    parser.add_argument("--no-write", action="store_true", help=f"print only; do not write {RESULTS.name}")
    baseline.add_argument(parser)  # adds postgresql@baseline: the durable server, the other checkout's exporter
    args = parser.parse_args(argv)
    chosen = [b for b in BACKENDS if b in args.backends.split(",")]
    if "sqlite" not in chosen:
        parser.error("sqlite is the reference: keep it in --backends")

    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="clary-bench-store-")))
        config = _config(workdir / "config.yml")
        urls: dict[str, str | None] = {"sqlite": None}
        settings = {"sqlite": {"journal_mode": "wal", "synchronous": "full"}}
        if "postgresql" in chosen:
            with mock.patch.dict(postgres.SETTINGS, DURABLE):
                durable = stack.enter_context(postgres.running())
            urls["postgresql"] = durable.fresh_database("clary_bench")
            settings["postgresql"] = _server_settings(durable)
            assert settings["postgresql"] == DURABLE, settings["postgresql"]
        if "pg-nofsync" in chosen:
            fast = stack.enter_context(postgres.running())
            urls["pg-nofsync"] = fast.fresh_database("clary_bench")
            settings["pg-nofsync"] = _server_settings(fast)
        servers = {"postgresql": durable if "postgresql" in chosen else None,
                   "pg-nofsync": fast if "pg-nofsync" in chosen else None}
        exporters = {name: Exporter(name, workdir / name, config, urls[name], server=servers.get(name))
                     for name in chosen}
        if args.baseline_tree and "postgresql" in chosen:
            name = "postgresql" + baseline.SUFFIX
            urls[name], settings[name] = durable.fresh_database("clary_bench_baseline"), settings["postgresql"]
            exporters[name] = Exporter(name, workdir / "baseline", config, urls[name], args.baseline_tree.resolve(),
                                       server=durable)
        for exporter in exporters.values():
            stack.callback(exporter.stop)
        rounds = asyncio.run(measure(args, exporters))
    text = report(args, rounds, settings)
    print("\n" + text)
    if not args.no_write:
        results = RESULTS.with_name("store_backends_before_after.md") if args.baseline_tree else RESULTS
        command = "python -m benchmarks.store_backends" + (f" --baseline-tree {args.baseline_tree}"
                                                           if args.baseline_tree else "")
        results.write_text("# Store backends: PostgreSQL vs SQLite\n\n"
                           f"`flock /tmp/clary-bench.lock {command}` "
                           "(`make bench-store`).\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
