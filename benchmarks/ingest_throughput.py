"""Events ingested per second over loopback: the exporter vs a bare aiohttp endpoint.

Each variant runs as its own server process on 127.0.0.1, started once
for the whole run (and warmed up), and receives the same load: batches of
100 events (a mix of every event type, each with a unique ``id`` as
exporter.instrument.client sends them), posted back to back over ``--connections``
keep-alive connections from ``--clients`` load-generator processes. A run
is ``--rounds`` rounds; in each, every variant gets ``--seconds`` of load
in turn (order alternating). Many short rounds rather than a few long ones,
because this machine's speed drifts by tens of percent over minutes:
variants measured seconds apart see the same machine, so the ratio to bare
within a round cancels most of the drift, and the median over many rounds
the rest. Reported: medians of events/s, batch latency and the server
process's CPU time per batch (user + system, from /proc), and the medians
and quartiles of the per-round ratios to bare.

Variants:
  bare      aiohttp endpoint that only reads the body and parses the JSON (json.loads)
            and answers {"accepted": n}: the floor cost of HTTP + JSON.
  validate  the same endpoint validating with the exporter's msgspec schemas instead
            of json.loads, recording nothing: shows where the exporter's time goes.
  exporter  the real exporter app (create_app): bearer-token check, size limits,
            msgspec validation (per item when one is invalid), dedupe window, everything
            recorded in bulk from a backlog of accepted events (exporter.ingest.backlog.EventBacklog,
            exporter.instrument.deferred): counters, histograms, gauges, hashed per-user activity.

Label sets (``--labels``):
  one       every event of a type carries the same labels and the same user: a fold
            of 2,048 events touches one series per family (the recorded run).
  varied    labels drawn from the allow-lists (3 tiers, 7 document types, 14
            features, 11 models, 6 routes...), 2,000 users and 20 licenses, from a
            pool of 1,000 events: more series per fold and per-user state for
            hundreds of users per fold, as busy real traffic has.

Usage: python -m benchmarks.ingest_throughput [--seconds 2] [--rounds 15] [--connections 8] [--clients 1]
       [--labels one|varied]
Results: benchmarks/results/ingest_throughput.md, ingest_throughput_varied.md (target: exporter >= 0.8x bare).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from benchmarks import baseline

VARIANTS = ("bare", "validate", "exporter")
BATCH = 100
TOKEN = "bench-ingest-token-0123456789"
RESULTS = {"one": Path(__file__).resolve().parent / "results" / "ingest_throughput.md",
           "varied": Path(__file__).resolve().parent / "results" / "ingest_throughput_varied.md"}

# One of each event type (as in docs/api.md); a batch cycles through them.
EVENTS = [
    {"type": "document_processed", "tier": "standard", "doc_type": "pdf", "outcome": "success",
     "duration_seconds": 1.2, "features": ["ocr", "table_extraction"]},
    {"type": "feature_used", "tier": "professional", "feature": "summarization", "outcome": "success"},
    {"type": "feature_blocked", "tier": "lite", "feature": "llm_extraction"},
    {"type": "quota_exceeded", "tier": "lite", "limit": "documents"},
    {"type": "template_used", "tier": "professional", "kind": "custom"},
    {"type": "api_call", "tier": "standard", "method": "POST", "route": "/api/v1/exports/{id}", "code": 200,
     "duration_seconds": 0.031},
    {"type": "inference", "tier": "standard", "model": "ocr-fast", "outcome": "success", "duration_seconds": 0.08},
    {"type": "model_load", "model": "layout-base", "duration_seconds": 4.2, "memory_bytes": 1.5e9},
    {"type": "queue_length", "queue": "ocr", "length": 12},
    {"type": "llm_call", "tier": "professional", "provider": "openai", "model": "gpt-4o-mini", "outcome": "success",
     "duration_seconds": 2.5, "time_to_first_token_seconds": 0.4, "input_tokens": 900, "output_tokens": 250},
    {"type": "license_validation", "tier": "standard", "result": "valid", "duration_seconds": 0.004,
     "license_key": "LIC-STD-0001"},
    {"type": "license_status", "tier": "standard", "license_key": "LIC-STD-0001", "expires_at": 1893456000,
     "usage": {"documents": 4200}, "limits": {"documents": 10000}},
    {"type": "user_action", "tier": "lite", "action": "upload", "user_id": "user-17"},
    {"type": "session", "tier": "lite", "duration_seconds": 640, "user_id": "user-17"},
]


# Values for --labels varied, from the catalog's allow-lists.
VARIED = {
    "tier": ("lite", "standard", "professional"),
    "doc_type": ("pdf", "docx", "xlsx", "image", "email", "html", "text"),
    "feature": ("ocr", "table_extraction", "classification", "entity_extraction", "summarization", "translation",
                "redaction", "handwriting", "signature_detection", "custom_templates", "batch_processing",
                "llm_extraction", "sso", "audit_log"),
    "model": ("layout-small", "layout-base", "ocr-fast", "ocr-accurate", "classifier-v2", "ner-base", "gpt-4o",
              "gpt-4o-mini", "claude-sonnet", "claude-haiku", "gemini-pro"),
    "provider": ("openai", "anthropic", "azure_openai", "google", "bedrock"),
    "route": ("/api/v1/documents", "/api/v1/documents/{id}", "/api/v1/exports/{id}", "/api/v1/templates",
              "/api/v1/jobs/{id}", "/api/v1/search"),
    "outcome": ("success", "success", "success", "failure"),
    "queue": ("ingest", "ocr", "inference", "llm", "export"),
    "action": ("login", "upload", "download", "view", "search", "export"),
    "license_key": tuple(f"LIC-{n:04d}" for n in range(20)),
    "user_id": tuple(f"user-{n}" for n in range(2000)),
}
VARIED_POOL = 1000


def event_pool(labels: str) -> list[dict]:
    """The events a load generator cycles through: one of each type, or a varied pool."""
    if labels == "one":
        return EVENTS
    chosen = random.Random(0)
    pool = []
    for n in range(VARIED_POOL):
        event = dict(EVENTS[n % len(EVENTS)])
        for field in event.keys() & VARIED.keys():
            event[field] = chosen.choice(VARIED[field])
        if "features" in event:
            event["features"] = chosen.sample(VARIED["feature"], chosen.randrange(4))
        if "duration_seconds" in event:
            event["duration_seconds"] = round(event["duration_seconds"] * chosen.uniform(0.2, 3.0), 4)
        pool.append(event)
    return pool


# --- servers ------------------------------------------------------------------------------------

def serve(variant: str, port: int) -> None:
    from aiohttp import web

    if variant in ("bare", "validate"):
        from exporter.ingest.decode import decode_batch

        async def events(request: web.Request) -> web.Response:
            if variant == "bare":
                count = len(json.loads(await request.read())["events"])
            else:
                count = len(decode_batch(await request.read(), 10_000)[0])
            return web.json_response({"accepted": count})

        app = web.Application()
        app.router.add_post("/api/v1/events", events)

        async def ready(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app.router.add_get("/readyz", ready)
    else:
        import logging

        from exporter.config import Config
        from exporter.server.app import create_app

        logging.basicConfig(level=logging.WARNING)
        data_dir = tempfile.mkdtemp(prefix="clary-bench-")
        config = Config(hmac_secret="bench-secret-0123456789abcdef", collectors={"system": False, "gpu": False},
                        data_dir=data_dir, ingest_tokens=[TOKEN])
        app = create_app(config)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --- load ------------------------------------------------------------------------------------------

class _Bodies:
    """Batch bodies with unique event ids (a repeated id would be skipped as a duplicate)."""

    def __init__(self, worker: int, labels: str = "one"):
        self.worker = worker
        self.parts = [json.dumps({**event, "id": "ID"}).split('"ID"') for event in event_pool(labels)]

    def __getitem__(self, batch: int) -> bytes:
        prefix = f'"w{self.worker}-b{batch}-e'
        start = batch * BATCH
        items = [head + prefix + f'{i}"' + tail for i, (head, tail) in
                 ((i, self.parts[(start + i) % len(self.parts)]) for i in range(BATCH))]
        return ('{"events": [' + ",".join(items) + "]}").encode()


class LoadShape(NamedTuple):
    """What each round's load looks like (the command line's --connections, --clients, --labels)."""

    connections: int = 8
    clients: int = 1
    labels: str = "one"


def load(port: int, seconds: float, connections: int, labels: str, worker: int, out) -> None:
    import aiohttp

    bodies = _Bodies(worker, labels)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    url = f"http://127.0.0.1:{port}/api/v1/events"

    async def run() -> tuple[int, int, list[float]]:
        done = errors = 0
        latencies: list[float] = []
        next_body = 0
        deadline = time.perf_counter() + seconds
        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def one_connection():
                nonlocal done, errors, next_body
                while time.perf_counter() < deadline:
                    body = bodies[next_body]
                    next_body += 1
                    started = time.perf_counter()
                    async with session.post(url, data=body, headers=headers) as resp:
                        payload = await resp.read()
                    latencies.append(time.perf_counter() - started)
                    if resp.status == 200 and json.loads(payload)["accepted"] == BATCH:
                        done += 1
                    else:
                        errors += 1

            await asyncio.gather(*(one_connection() for _ in range(connections)))
        return done, errors, latencies

    out.send(asyncio.run(run()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(port: int, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not come up")


class Server:
    """One variant's server process, started once and measured segment by segment."""

    def __init__(self, variant: str, baseline_tree: Path | None = None):
        self.variant = variant
        self.port = _free_port()
        self.process = subprocess.Popen(**baseline.server("benchmarks.ingest_throughput", variant, self.port,
                                                          baseline_tree))

    def start(self, ctx, shape: LoadShape) -> None:
        _wait_ready(self.port)
        _run_clients(ctx, self.port, 1.0, shape)  # warm-up (first-seen series, caches), not counted

    def measure(self, ctx, seconds: float, shape: LoadShape) -> dict:
        cpu_before = _cpu_seconds(self.process.pid)
        results = _run_clients(ctx, self.port, seconds, shape)
        cpu = _cpu_seconds(self.process.pid) - cpu_before
        done = sum(r[0] for r in results)
        errors = sum(r[1] for r in results)
        latencies = sorted(lat for r in results for lat in r[2])
        if errors:
            raise RuntimeError(f"{self.variant}: {errors} batches were not fully accepted")
        return {
            "events_per_s": done * BATCH / seconds,
            "batches_per_s": done / seconds,
            "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
            "cpu_us_per_batch": cpu / done * 1e6,
        }

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of the server process so far."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _run_clients(ctx, port: int, seconds: float, shape: LoadShape) -> list:
    pipes, procs = [], []
    for worker in range(shape.clients):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=load, args=(port, seconds, shape.connections, shape.labels,
                                              worker + int(time.time() * 1000), child))
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    results = [pipe.recv() for pipe in pipes]
    for proc in procs:
        proc.join(30)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="load per variant per round")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=8, help="concurrent keep-alive connections per client")
    parser.add_argument("--clients", type=int, default=1, help="load-generator processes")
    parser.add_argument("--labels", choices=tuple(RESULTS), default="one",
                        help="one label set per event type, or labels and users varied (see above)")
    baseline.add_argument(parser)
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0

    shape = LoadShape(args.connections, args.clients, args.labels)
    variants = VARIANTS + (("exporter" + baseline.SUFFIX,) if args.baseline_tree else ())
    rounds: dict[str, list[dict]] = {v: [] for v in variants}
    ctx = multiprocessing.get_context("spawn")
    servers = {variant: Server(variant, args.baseline_tree) for variant in variants}
    try:
        for server in servers.values():
            server.start(ctx, shape)
        for r in range(args.rounds):
            for variant in variants if r % 2 == 0 else reversed(variants):
                result = servers[variant].measure(ctx, args.seconds, shape)
                rounds[variant].append(result)
                print(f"round {r + 1} {variant:>17}: {result['events_per_s']:>10,.0f} events/s  "
                      f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  "
                      f"server CPU {result['cpu_us_per_batch']:.0f} us/batch", flush=True)
    finally:
        for server in servers.values():
            server.stop()

    def median(variant: str, key: str) -> float:
        ordered = sorted(r[key] for r in rounds[variant])
        return ordered[len(ordered) // 2]

    def ratios(variant: str, key: str, inverse: bool = False) -> list[float]:
        """Variant / bare in the same round, sorted: a machine that is slower for a while slows
        every variant of that round alike, so the ratio cancels it."""
        return sorted((b[key] / r[key]) if inverse else (r[key] / b[key])
                      for r, b in zip(rounds[variant], rounds["bare"]))

    def paired(variant: str, key: str, inverse: bool = False) -> float:
        ordered = ratios(variant, key, inverse)
        return ordered[len(ordered) // 2]

    def quartiles(variant: str, key: str, inverse: bool = False) -> str:
        ordered = ratios(variant, key, inverse)
        return f"{ordered[len(ordered) // 4]:.2f}x-{ordered[3 * len(ordered) // 4]:.2f}x"

    names = {"bare": "bare (json.loads only)", "validate": "validate (msgspec only, no recording)",
             "exporter": "exporter (validate + dedupe + record)",
             "exporter" + baseline.SUFFIX: f"exporter from the baseline tree ({args.baseline_tree})"}
    keys = ("events_per_s", "batches_per_s", "p50_ms", "p99_ms", "cpu_us_per_batch")
    result = {v: {k: median(v, k) for k in keys} for v in variants}
    ratio = paired("exporter", "events_per_s")
    cpu_ratio = paired("exporter", "cpu_us_per_batch", inverse=True)
    table = [
        f"Ingest throughput, batches of {BATCH} events over loopback ({args.connections} connections x "
        f"{args.clients} client process(es), labels: {args.labels}, {args.seconds:g} s per round, "
        f"medians of {args.rounds} rounds; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}).",
        "The two ratio columns are medians of the ratio to bare within each round (variants run back to back",
        "in alternating order), not ratios of the medians.",
        "",
        "| variant | events/s | batches/s | batch p50 (ms) | batch p99 (ms) | server CPU per batch (µs) "
        "| events/s vs bare | CPU per event vs bare |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in variants:
        r = result[variant]
        table.append(f"| {names[variant]} | {r['events_per_s']:,.0f} | {r['batches_per_s']:,.0f} | "
                     f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['cpu_us_per_batch']:.0f} | "
                     f"{paired(variant, 'events_per_s'):.2f}x | "
                     f"{paired(variant, 'cpu_us_per_batch', inverse=True):.2f}x |")
    cpu = {v: result[v]["cpu_us_per_batch"] for v in variants}
    if args.baseline_tree:
        before = "exporter" + baseline.SUFFIX
        after_vs_before = statistics.median(a["events_per_s"] / b["events_per_s"]
                                            for a, b in zip(rounds["exporter"], rounds[before]))
        cpu_vs_before = statistics.median(b["cpu_us_per_batch"] / a["cpu_us_per_batch"]
                                          for a, b in zip(rounds["exporter"], rounds[before]))
        table += ["", f"This tree vs the baseline tree, same rounds (median of per-round ratios): "
                      f"{after_vs_before:.3f}x events/s, {cpu_vs_before:.3f}x events per CPU second."]
    table += [
        "",
        "Per round, exporter vs bare in events/s: "
        + ", ".join(f"{r['events_per_s'] / b['events_per_s']:.2f}x" for r, b in zip(rounds["exporter"], rounds["bare"]))
        + ".",
        "",
        f"Target: exporter >= 0.80x bare in events/s. Measured: {ratio:.2f}x"
        + (" (target met)" if ratio >= 0.8 else " (target not met)")
        + f", middle half of the rounds {quartiles('exporter', 'events_per_s')}."
        + f" Server CPU per event: {cpu_ratio:.2f}x of bare's throughput per CPU second"
        + f" (middle half {quartiles('exporter', 'cpu_us_per_batch', inverse=True)}).",
        "",
        "Where the server's CPU goes (µs per batch of 100, medians; events/s also depends on the load",
        "generator, a Python client on the same machine, which bounds the bare endpoint):",
        "",
        f"- HTTP + reading the body + json.loads (bare): {cpu['bare']:.0f} µs",
        f"- msgspec decoding and validation instead of json.loads: {cpu['validate'] - cpu['bare']:+.0f} µs",
        "- bearer check, dedupe, the backlog recorded in bulk (amortised: counters, histograms, gauges,",
        f"  per-user state), events_total, the response: {cpu['exporter'] - cpu['validate']:+.0f} µs",
        "",
        f"Re-run: `python -m benchmarks.ingest_throughput --labels {args.labels}` (`--seconds`, `--rounds`,"
        " `--connections`, `--clients`).",
    ]
    print("\n".join(table))
    RESULTS[args.labels].parent.mkdir(exist_ok=True)
    RESULTS[args.labels].write_text("\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
