"""Event-loop stall during /metrics scrapes: ours vs prometheus_client's handler.

For each registry size (1k, 10k, 50k series) and each variant, a server
process serves ``/metrics`` and a trivial ``/ping`` on one event loop. A
scraper process fetches ``/metrics`` back to back (gzip, as Prometheus does)
while this process times ``/ping`` every 2 ms. The stall is the ping latency
(p50/p99) with scrapes running; ``idle`` is the same with no scraper. All in
one run, loopback only, bounded by ``--seconds`` per cell.

Variants:
  stock   prometheus_client.aiohttp.make_aiohttp_handler (renders on the loop)
  thread  render on a worker thread only (default GIL switch interval, GC untouched)
  ours    exporter.instrument.exposition.Renderer: worker thread + 0.2 ms switch interval + GC paused

Usage: python -m benchmarks.scrape_stall [--seconds 5] [--rounds 1] [--sizes 1000,10000,50000]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("stock", "thread", "ours")
RESULTS = Path(__file__).resolve().parent / "results" / "scrape_stall.md"


# --- server side ------------------------------------------------------------

def _registry(series: int):
    from prometheus_client import CollectorRegistry, Counter

    registry = CollectorRegistry()
    counter = Counter("clary_bench_requests_total", "Benchmark series.", ["route", "code"], registry=registry)
    for i in range(series):
        counter.labels(f"/api/v1/resource{i // 5}", str(200 + i % 5)).inc(i)
    return registry


def _metrics_handler(variant: str, registry):
    from aiohttp import web

    if variant == "stock":
        from prometheus_client.aiohttp import make_aiohttp_handler

        return make_aiohttp_handler(registry)

    from exporter.instrument.exposition import Renderer

    # "thread": the plain fix (render on a worker thread); "ours": what the exporter ships.
    renderer = Renderer(registry, switch_interval=None, pause_gc=False) if variant == "thread" else Renderer(registry)

    async def handler(request: web.Request) -> web.Response:
        rendered = await renderer.render(request.headers.get("Accept"), request.headers.get("Accept-Encoding"))
        headers = {"Content-Type": rendered.content_type}
        if rendered.gzipped:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=rendered.body, headers=headers)

    return handler


def serve(variant: str, series: int, port: int) -> None:
    from prometheus_client import disable_created_metrics
    from aiohttp import web

    disable_created_metrics()
    app = web.Application()
    app.router.add_get("/metrics", _metrics_handler(variant, _registry(series)))

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="pong")

    app.router.add_get("/ping", ping)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def scrape(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    count = 0
    while time.monotonic() < deadline:
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        conn.getresponse().read()
        count += 1
    print(count)


# --- driver -----------------------------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"benchmark server on {port} did not start")


def _ping_latencies(port: int, seconds: float) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        start = time.perf_counter()
        conn.request("GET", "/ping")
        conn.getresponse().read()
        latencies.append(time.perf_counter() - start)
        time.sleep(0.002)
    return latencies


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def measure(variant: str, series: int, seconds: float) -> dict:
    port = _free_port()
    me = [sys.executable, "-m", "benchmarks.scrape_stall"]
    server = subprocess.Popen([*me, "serve", variant, str(series), str(port)])
    try:
        _wait_ready(port)
        idle = _ping_latencies(port, min(1.0, seconds))
        scraper = subprocess.Popen([*me, "scrape", str(port), str(seconds)], stdout=subprocess.PIPE, text=True)
        time.sleep(0.2)
        busy = _ping_latencies(port, seconds - 0.4)
        scrapes = int(scraper.communicate(timeout=seconds + 60)[0].strip() or 0)
    finally:
        server.terminate()
        server.wait(10)
    return {"variant": variant, "series": series, "idle_p99": _pct(idle, 0.99), "p50": _pct(busy, 0.50),
            "p99": _pct(busy, 0.99), "max": max(busy) * 1000, "scrapes": scrapes, "pings": len(busy)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":
        serve(argv[1], int(argv[2]), int(argv[3]))
        return 0
    if argv and argv[0] == "scrape":
        scrape(int(argv[1]), float(argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="scrape time per cell")
    parser.add_argument("--rounds", type=int, default=1, help="rounds per cell; the median is reported")
    parser.add_argument("--sizes", default="1000,10000,50000")
    args = parser.parse_args(argv)
    rows = []
    for series in (int(s) for s in args.sizes.split(",")):
        for variant in VARIANTS:
            runs = [measure(variant, series, args.seconds) for _ in range(args.rounds)]
            row = {k: statistics.median(r[k] for r in runs) if k not in ("variant", "series") else runs[0][k]
                   for k in runs[0]}
            rows.append(row)
            print(f"{series:>6} {variant:<6} p50 {row['p50']:7.2f} ms  p99 {row['p99']:7.2f} ms  "
                  f"max {row['max']:7.2f} ms  idle p99 {row['idle_p99']:5.2f} ms  scrapes {row['scrapes']}",
                  flush=True)
    table = [
        "| series | variant | ping p50 (ms) | ping p99 (ms) | ping max (ms) | idle p99 (ms) | scrapes |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    table += [
        f"| {r['series']:,} | {r['variant']} | {r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.1f} "
        f"| {r['idle_p99']:.2f} | {int(r['scrapes'])} |"
        for r in rows
    ]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
