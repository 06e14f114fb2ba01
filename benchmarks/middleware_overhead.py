"""Requests/s of one tiny handler behind each HTTP-metrics middleware, in one run.

Every variant serves the same JSON handler on ``/items/{id}`` from its own
server process (pinned to one CPU when there are two or more); ``wrk -t1
-c32`` (pinned to another) loads ``/items/42`` over loopback with an
``X-API-Key`` header, for a bounded duration per round. Rounds go round-robin
over the variants so that drift hits all of them alike; the table shows the
median of the rounds and the ratios that count, all from this one run.

aiohttp variants: bare, an empty middleware, ours (``exporter.instrument.aiohttp_middleware.instrument``:
wrapped route handlers, no middleware chain), ours with a ``traceparent``
header on every request (exemplars), ours as a middleware
(``metrics_middleware``), a naive prometheus_client middleware,
aiohttp-prometheus-exporter.
ASGI variants (Starlette on uvicorn): bare, an empty pure-ASGI middleware,
ours (``exporter.instrument.asgi``), ours with ``traceparent``, starlette-exporter
(``group_paths=True``), prometheus-fastapi-instrumentator.

Targets (docs/design/performance.md): ours >= 0.95x the empty aiohttp
middleware (issue: >= 0.90x bare, >= 0.97x empty) and ahead of every peer;
ASGI ours >= 0.90x bare Starlette.

Usage: python -m benchmarks.middleware_overhead [--duration 5] [--rounds 3] [--only a,b]
Writes benchmarks/results/middleware_overhead.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from benchmarks import baseline

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "middleware_overhead.md"
LOOPBACK = "127.0.0.1"
API_KEY = "bench-key-professional"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
PATH = "/items/42"


@dataclass(frozen=True)
class Variant:
    name: str
    stack: str  # "aiohttp" or "asgi"
    label: str
    traced: bool = False
    package: str | None = None  # a peer's distribution, for the version column


VARIANTS = (
    Variant("aiohttp-bare", "aiohttp", "bare aiohttp", package="aiohttp"),
    Variant("aiohttp-empty", "aiohttp", "empty middleware"),
    Variant("aiohttp-ours", "aiohttp", "**ours** (`instrument(app, ...)`: wrapped handlers, no middleware)"),
    Variant("aiohttp-ours-traced", "aiohttp", "ours, `traceparent` on every request (exemplars)", traced=True),
    Variant("aiohttp-ours-middleware", "aiohttp", "ours as a middleware (`metrics_middleware`)"),
    Variant("aiohttp-naive", "aiohttp", "naive prometheus_client middleware"),
    Variant("aiohttp-prometheus-exporter", "aiohttp", "aiohttp-prometheus-exporter",
            package="aiohttp-prometheus-exporter"),
    Variant("starlette-bare", "asgi", "bare Starlette on uvicorn", package="starlette"),
    Variant("starlette-empty", "asgi", "empty pure-ASGI middleware"),
    Variant("starlette-ours", "asgi", "**ours** (`exporter.instrument.asgi`)"),
    Variant("starlette-ours-traced", "asgi", "ours, `traceparent` on every request (exemplars)", traced=True),
    Variant("starlette-exporter", "asgi", "starlette-exporter (`group_paths=True`)", package="starlette-exporter"),
    Variant("instrumentator", "asgi", "prometheus-fastapi-instrumentator",
            package="prometheus-fastapi-instrumentator"),
)
BY_NAME = {v.name: v for v in VARIANTS}


# --- server side ---------------------------------------------------------------


def _our_recorder():
    from prometheus_client import CollectorRegistry

    from exporter.config import ApiKey
    from exporter.instrument.identity import key_table_resolver
    from exporter.instrument.hashing import Hasher
    from exporter.instrument.recorder import Recorder

    registry = CollectorRegistry()
    recorder = Recorder(registry, Hasher("benchmark-secret-0123456789"))
    resolver = key_table_resolver({API_KEY: ApiKey(tier="professional", user="bench-user")})
    return registry, recorder, resolver


def aiohttp_app(name: str):
    import time as _time

    import prometheus_client
    from aiohttp import web

    async def item(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info["id"], "ok": True})

    middlewares = []
    registry = prometheus_client.CollectorRegistry()
    if name == "aiohttp-empty":

        @web.middleware
        async def empty(request, handler):
            return await handler(request)

        middlewares.append(empty)
    elif name == "aiohttp-ours-middleware":
        from exporter.instrument.aiohttp_middleware import metrics_middleware

        registry, recorder, resolver = _our_recorder()
        middlewares.append(metrics_middleware(recorder, resolver))
    elif name == "aiohttp-naive":
        requests = prometheus_client.Counter(
            "http_requests_total", "Requests.", ["method", "route", "code"], registry=registry)
        latency = prometheus_client.Histogram(
            "http_request_duration_seconds", "Latency.", ["method", "route"], registry=registry)

        @web.middleware
        async def naive(request, handler):
            start = _time.perf_counter()
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            code = 500
            try:
                response = await handler(request)
                code = response.status
                return response
            finally:
                requests.labels(request.method, route, code).inc()
                latency.labels(request.method, route).observe(_time.perf_counter() - start)

        middlewares.append(naive)
    elif name == "aiohttp-prometheus-exporter":
        from aiohttp_prometheus_exporter.middleware import prometheus_middleware_factory

        middlewares.append(prometheus_middleware_factory(registry=registry))

    app = web.Application(middlewares=middlewares)
    app.router.add_get("/items/{id}", item)
    if name in ("aiohttp-ours", "aiohttp-ours-traced"):
        from exporter.instrument.aiohttp_middleware import instrument

        registry, recorder, resolver = _our_recorder()
        instrument(app, recorder, resolver)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=prometheus_client.generate_latest(registry), content_type="text/plain")

    app.router.add_get("/metrics", metrics)
    return app


def asgi_app(name: str):
    import prometheus_client
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def item(request):
        return JSONResponse({"id": request.path_params["id"], "ok": True})

    registry = prometheus_client.REGISTRY

    async def metrics(request):
        return Response(prometheus_client.generate_latest(registry), media_type="text/plain")

    app = Starlette(routes=[Route("/items/{id}", item)])
    if name == "starlette-empty":

        class Empty:
            def __init__(self, app):
                self.app = app

            async def __call__(self, scope, receive, send):
                await self.app(scope, receive, send)

        app.add_middleware(Empty)
    elif name.startswith("starlette-ours"):
        from exporter.instrument.asgi import MetricsMiddleware

        registry, recorder, resolver = _our_recorder()
        app.add_middleware(MetricsMiddleware, recorder=recorder, resolver=resolver)
    elif name == "starlette-exporter":
        from starlette_exporter import PrometheusMiddleware, handle_metrics

        app.add_middleware(PrometheusMiddleware, group_paths=True)
        app.add_route("/metrics", handle_metrics)
        return app
    elif name == "instrumentator":
        from prometheus_fastapi_instrumentator import Instrumentator

        Instrumentator().instrument(app).expose(app)
        return app
    app.add_route("/metrics", metrics)
    return app


def serve(name: str, port: int) -> None:
    variant = BY_NAME[name]
    if variant.stack == "aiohttp":
        from aiohttp import web

        web.run_app(aiohttp_app(name), host=LOOPBACK, port=port, access_log=None, print=None)
    else:
        import uvicorn

        uvicorn.run(asgi_app(name), host=LOOPBACK, port=port, log_level="warning", access_log=False)


# --- load side -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _get(url: str, headers: dict | None = None, timeout: float = 5) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return resp.status, resp.read()


def _cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return []


def start_server(name: str, cpu: int | None, baseline_tree: Path | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        **baseline.server("benchmarks.middleware_overhead", name, port, baseline_tree),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if _get(f"http://{LOOPBACK}:{port}{PATH}", {"X-API-Key": API_KEY}, timeout=1)[0] == 200:
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{name} did not come up on port {port}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk_cmd(port: int, duration: float, traced: bool, cpu: int | None) -> list[str]:
    cmd = ["wrk", "-t1", "-c32", f"-d{duration:g}s", "-H", f"X-API-Key: {API_KEY}"]
    # Every variant gets the same number of header bytes: a pure-Python HTTP parser (uvicorn's h11)
    # spends microseconds per header, which is not the middleware's cost.
    cmd += ["-H", f"traceparent: {TRACEPARENT}" if traced else f"x-padding: {'0' * len(TRACEPARENT)}"]
    cmd.append(f"http://{LOOPBACK}:{port}{PATH}")
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    return cmd


def _parse_wrk(out: str) -> tuple[int, float]:
    """(requests, requests/s) from wrk's report; errors are fatal."""
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk reported errors:\n{out}")
    return int(re.search(r"(\d+) requests in", out).group(1)), float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def wrk(server: subprocess.Popen, port: int, duration: float, traced: bool, cpu: int | None) -> tuple[float, float]:
    """One wrk run: (requests/s, server CPU microseconds per request)."""
    cpu_before = cpu_seconds(server.pid)
    out = subprocess.run(_wrk_cmd(port, duration, traced, cpu), capture_output=True, text=True,
                         timeout=duration + 30, check=True).stdout
    cpu_used = cpu_seconds(server.pid) - cpu_before
    requests, rps = _parse_wrk(out)
    return rps, cpu_used / requests * 1e6


def paired(a: tuple[subprocess.Popen, int, bool], b: tuple[subprocess.Popen, int, bool], duration: float,
           cpu: int | None) -> tuple[float, float]:
    """Load two servers at the same time (both pinned to the same CPU): their CPU µs per request.

    Whatever else the machine does in those seconds, it does to both: the ratio of the two costs
    is what one variant costs against the other, with the noise cancelled out.
    """
    before = [cpu_seconds(a[0].pid), cpu_seconds(b[0].pid)]
    runs = [subprocess.Popen(_wrk_cmd(port, duration, traced, cpu), stdout=subprocess.PIPE, text=True)
            for _, port, traced in (a, b)]
    outs = [run.communicate(timeout=duration + 30)[0] for run in runs]
    used = [cpu_seconds(a[0].pid) - before[0], cpu_seconds(b[0].pid) - before[1]]
    requests = [_parse_wrk(out)[0] for out in outs]
    return used[0] / requests[0] * 1e6, used[1] / requests[1] * 1e6


# Per variant: (sample name, labels the /items/{id} GET series must carry).
_RECORDED = {
    "aiohttp-ours": ("clary_http_requests_total",
                     {"tier": "professional", "method": "GET", "route": "/items/{id}", "code": "200"}),
    "aiohttp-naive": ("http_requests_total", {"method": "GET", "route": "/items/{id}", "code": "200"}),
    "aiohttp-prometheus-exporter": ("aiohttp_responses_total", {"path_template": "/items/{id}"}),
    "starlette-exporter": ("starlette_requests_total", {"path": "/items/{id}"}),
    "instrumentator": ("http_requests_total", {"handler": "/items/{id}"}),
}
_RECORDED["aiohttp-ours-traced"] = _RECORDED["aiohttp-ours-middleware"] = _RECORDED["starlette-ours"] = _RECORDED["starlette-ours-traced"] = (
    _RECORDED["aiohttp-ours"])


def check_recorded(name: str, port: int) -> str:
    """How many /items/{id} requests the variant's /metrics reports: proof it measured them."""
    from prometheus_client.parser import text_string_to_metric_families

    variant, _ = baseline.variant_of(name)
    if variant not in _RECORDED:
        return "-"
    sample_name, labels = _RECORDED[variant]
    status, body = _get(f"http://{LOOPBACK}:{port}/metrics")
    total = sum(
        s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == sample_name and labels.items() <= s.labels.items()
    )
    if status != 200 or total <= 0:
        raise RuntimeError(f"{name}: /metrics shows no /items/{{id}} requests")
    return f"{total:,.0f}"


def versions() -> str:
    names = ("aiohttp", "starlette", "uvicorn", "prometheus-client", "aiohttp-prometheus-exporter",
             "starlette-exporter", "prometheus-fastapi-instrumentator")
    out = []
    for name in names:
        try:
            out.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(f"{name} (not installed)")
    return ", ".join(out)


@dataclass
class Results:
    rps: dict[str, list[float]]
    cpu_us: dict[str, list[float]]  # server CPU microseconds per request
    recorded: dict[str, str]
    busy_runs: int = 0  # measurements started although the machine was not quiet
    # (variant, baseline) -> per round: baseline's CPU per request / variant's, measured concurrently
    paired: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    measurements: int = 0


def _cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of the machine's CPU time spent busy over ``seconds`` (Linux /proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return idle, sum(fields[:8])

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def wait_quiet(max_busy: float, timeout: float) -> bool:
    """Wait until other load on the machine (our servers idle) is below ``max_busy``; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if _cpu_busy() <= max_busy:
                return True
        except OSError:  # pragma: no cover - not Linux
            return True
        if time.monotonic() >= deadline:
            return False


# Head-to-head pairs measured besides every variant against its stack's bare and empty baselines.
PEER_PAIRS = (
    ("aiohttp-ours", "aiohttp-naive"),
    ("aiohttp-ours", "aiohttp-prometheus-exporter"),
    ("starlette-ours", "starlette-exporter"),
    ("starlette-ours", "instrumentator"),
)


def run(selected: list[Variant], duration: float, rounds: int, quiet: float | None = None,
        quiet_timeout: float = 120, baseline_tree: Path | None = None) -> Results:
    cpus = _cpus()
    server_cpu, load_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    results: dict[str, list[float]] = {v.name: [] for v in selected}
    cpu_per_request: dict[str, list[float]] = {v.name: [] for v in selected}
    recorded: dict[str, str] = {}
    busy_runs = 0
    rng = random.Random(1)
    try:
        for v in selected:
            servers[v.name] = start_server(v.name, server_cpu, baseline_tree)
        for v in selected:  # warm-up: caches, first-request paths, page faults
            wrk(*servers[v.name], 1, v.traced, load_cpu)
        names = {v.name for v in selected}
        pairs = [(v.name, base) for v in selected for base in _baselines(v) if base in names and base != v.name]
        pairs += [(a, b) for a, b in PEER_PAIRS if a in names and b in names]
        pairs += [(v.name, v.name + baseline.SUFFIX) for v in selected if v.name + baseline.SUFFIX in names]
        by_name = {v.name: v for v in selected}
        paired_costs: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
        measurements = 0
        for r in range(rounds):
            order = list(selected)
            rng.shuffle(order)  # no variant always runs first or right after another
            measured = {}
            for v in order:
                if quiet is not None and not wait_quiet(quiet, quiet_timeout):
                    busy_runs += 1
                measurements += 1
                measured[v.name] = wrk(*servers[v.name], duration, v.traced, load_cpu)
                rps, cpu_us = measured[v.name]
                print(f"round {r + 1}/{rounds} {v.name:30s} {rps:10.0f} req/s {cpu_us:8.1f} us CPU/req",
                      flush=True)
            for v in selected:
                results[v.name].append(measured[v.name][0])
                cpu_per_request[v.name].append(measured[v.name][1])
            rng.shuffle(pairs)
            for name, base in pairs:
                if quiet is not None and not wait_quiet(quiet, quiet_timeout):
                    busy_runs += 1
                measurements += 1
                cost, base_cost = paired((*servers[name], by_name[name].traced),
                                         (*servers[base], by_name[base].traced), duration, load_cpu)
                paired_costs[name, base].append(base_cost / cost)
                print(f"round {r + 1}/{rounds} {name:30s} vs {base:28s} {base_cost / cost:6.3f}", flush=True)
        for v in selected:
            recorded[v.name] = check_recorded(v.name, servers[v.name][1])
    finally:
        for proc, _ in servers.values():
            proc.terminate()
        for proc, _ in servers.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return Results(results, cpu_per_request, recorded, busy_runs, paired_costs, measurements)


def _baselines(v: Variant) -> tuple[str, str]:
    stack = "aiohttp" if v.stack == "aiohttp" else "starlette"
    return f"{stack}-bare", f"{stack}-empty"


def _ratio(values: dict[str, list[float]], name: str, base: str, inverse: bool = False) -> float | None:
    """Median over rounds of the per-round ratio: each round's variants ran close together in time,
    so a burst of other load on the machine moves numerator and denominator alike."""
    if base not in values or name not in values:
        return None
    pairs = zip(values[name], values[base])
    return statistics.median((b / a) if inverse else (a / b) for a, b in pairs)


def _paired(results: Results, name: str, base: str) -> float | None:
    if name == base:
        return 1.0
    values = results.paired.get((name, base))
    return statistics.median(values) if values else None


def table(selected: list[Variant], results: Results) -> str:
    rps = results.rps
    lines = [
        "| stack | variant | **vs bare** | **vs empty** | req/s alone (median) | alone: vs bare / vs empty "
        "| CPU µs/req alone (median) | requests recorded |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    for v in selected:
        bare, empty = _baselines(v)
        alone = f"{fmt(_ratio(rps, v.name, bare))} / {fmt(_ratio(rps, v.name, empty))}"
        lines.append(
            f"| {v.stack} | {v.label} | {fmt(_paired(results, v.name, bare))} | {fmt(_paired(results, v.name, empty))} "
            f"| {statistics.median(rps[v.name]):,.0f} | {alone} | {statistics.median(results.cpu_us[v.name]):.1f} "
            f"| {results.recorded.get(v.name, '-')} |"
        )
    return "\n".join(lines)


def verdicts(results: Results) -> list[str]:
    out = []

    def check(what: str, a: str, b: str, target: float | None = None) -> None:
        r = _paired(results, a, b)
        if r is None:
            return
        values = results.paired.get((a, b), [])
        ok = r >= target if target is not None else r > 1
        goal = f">= {target:.2f}x" if target is not None else "ahead of"
        spread = f" (rounds: {', '.join(f'{x:.3f}' for x in values)})" if values else ""
        out.append(f"- {'PASS' if ok else 'MISS'}: {what} ({goal}): {r:.3f}{spread}")

    check("aiohttp ours vs bare aiohttp", "aiohttp-ours", "aiohttp-bare", 0.90)
    check("aiohttp ours vs empty middleware (performance.md)", "aiohttp-ours", "aiohttp-empty", 0.95)
    check("aiohttp ours vs empty middleware (issue)", "aiohttp-ours", "aiohttp-empty", 0.97)
    check("aiohttp ours vs naive prometheus_client", "aiohttp-ours", "aiohttp-naive")
    check("aiohttp ours vs aiohttp-prometheus-exporter", "aiohttp-ours", "aiohttp-prometheus-exporter")
    check("aiohttp ours as a middleware vs empty middleware (performance.md)", "aiohttp-ours-middleware",
          "aiohttp-empty", 0.95)
    check("ASGI ours vs bare Starlette", "starlette-ours", "starlette-bare", 0.90)
    check("ASGI ours vs starlette-exporter", "starlette-ours", "starlette-exporter")
    check("ASGI ours vs prometheus-fastapi-instrumentator", "starlette-ours", "instrumentator")
    for (name, base) in results.paired:
        if base == name + baseline.SUFFIX:  # before/after in this run: no slower than the baseline tree
            check(f"{name} vs the same variant from the baseline tree", name, base, 0.97)
    return out


# --- in process: the middleware alone ---------------------------------------------------


async def _micro_aiohttp(name: str):
    """One request through the app's dispatch (router, middlewares, handler), no sockets."""
    from unittest import mock

    from aiohttp.test_utils import make_mocked_request

    app = aiohttp_app(name)
    app.on_startup.freeze()
    await app.startup()  # what a runner does: instrument() wraps the handlers here
    app.freeze()
    headers = {"X-API-Key": API_KEY}
    if BY_NAME[name].traced:
        headers["traceparent"] = TRACEPARENT
    writer = mock.Mock()
    writer.output_size = 0
    request = make_mocked_request("GET", PATH, headers=headers, app=app, writer=writer)
    return lambda: app._handle(request)  # what the server calls per request


async def _micro_asgi(name: str):
    """One request through the whole ASGI app, with a fixed scope."""
    app = asgi_app(name)
    headers = [(b"host", b"127.0.0.1"), (b"user-agent", b"wrk"), (b"x-api-key", API_KEY.encode())]
    if BY_NAME[name].traced:
        headers.append((b"traceparent", TRACEPARENT.encode()))
    template = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": PATH, "raw_path": PATH.encode(), "query_string": b"", "root_path": "",
        "headers": headers, "client": (LOOPBACK, 50000), "server": (LOOPBACK, 80), "state": {},
    }

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    return lambda: app(dict(template), receive, send)


def micro(selected: list[Variant], calls: int = 20_000, repeats: int = 7) -> dict[str, float]:
    """Per-request cost of each variant's app in process, in µs: the best of ``repeats`` timings of
    ``calls`` requests. Every variant is warmed up first (the first one timed was up to 1.6x slower
    otherwise), and the repeats go round-robin over the variants so a burst of load hits all alike."""
    import asyncio

    async def measure() -> dict[str, float]:
        requests = {v.name: await (_micro_aiohttp if v.stack == "aiohttp" else _micro_asgi)(v.name)
                    for v in selected}
        best = dict.fromkeys(requests, float("inf"))
        for repeat in range(repeats + 1):  # the first pass warms up
            for name, one in requests.items():
                start = time.perf_counter()
                for _ in range(calls):
                    await one()
                if repeat:
                    best[name] = min(best[name], (time.perf_counter() - start) / calls * 1e6)
        return best

    out = asyncio.run(measure())
    for v in selected:
        print(f"in process {v.name:30s} {out[v.name]:8.2f} µs/request", flush=True)
    return out


def breakdown(repeats: int = 5, number: int = 100_000) -> str:
    """Where our aiohttp integration's time goes: each step of its per-request work, timed alone."""
    import asyncio
    import timeit
    from unittest import mock

    from aiohttp.test_utils import make_mocked_request
    from multidict import istr

    from exporter.instrument.identity import ANONYMOUS, lookup
    from exporter.instrument.requests import RequestMetrics
    from exporter.instrument.aiohttp_middleware import IDENTITY

    async def prepared():
        _, recorder, resolver = _our_recorder()
        app = aiohttp_app("aiohttp-bare")
        app.freeze()
        request = make_mocked_request("GET", PATH, headers={"X-API-Key": API_KEY}, app=app, writer=mock.Mock())
        match_info = await app.router.resolve(request)
        match_info.add_app(app)
        request._match_info = match_info
        return recorder, resolver, request

    recorder, resolver, request = asyncio.run(prepared())
    metrics = RequestMetrics(recorder)
    env = {
        "request": request, "key": istr("X-API-Key"), "tp": istr("traceparent"), "resolve": lookup(resolver),
        "ANONYMOUS": ANONYMOUS, "IDENTITY": IDENTITY, "identity": resolver(API_KEY), "enter": metrics.enter,
        "leave": metrics.leave, "perf_counter": time.perf_counter, "templates": {request.match_info.route: "/i"},
        "response": __import__("aiohttp").web.Response(text="x"),
    }
    steps = [
        ("middleware form only: route object and cached template (`instrument` bakes it in)",
         "templates.get(request.match_info.route)"),
        ("identity: `X-API-Key` header, key-table lookup", "resolve(request._headers.get(key), ANONYMOUS)"),
        ("identity stored for handlers (`request[IDENTITY]`)", "request._state[IDENTITY] = identity"),
        ("in flight + start time", "enter(); perf_counter()"),
        ("`response.status`, method, `traceparent` header",
         "response.status; request._method; request._headers.get(tp)"),
        ("count + duration bucket + active-user check (`leave`; the aiohttp integrations inline these steps)",
         "leave(enter(), identity, 'GET', '/i', 200, perf_counter(), None) "),
        ("the same with a `traceparent` (exemplar: at most one per bucket per 0.1 s)",
         "leave(enter(), identity, 'GET', '/i', 200, perf_counter(), "
         "'00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')"),
    ]
    base = min(timeit.repeat("enter(); perf_counter()", globals=env, number=number, repeat=repeats)) / number
    lines = ["| step | ns |", "|---|---:|"]
    for label, stmt in steps:
        t = min(timeit.repeat(stmt, globals=env, number=number, repeat=repeats)) / number
        if stmt.startswith("leave("):
            t -= base  # the enter() + perf_counter() inside the statement are the row above
        lines.append(f"| {label} | {t * 1e9:.0f} |")
    return "\n".join(lines)


def micro_table(selected: list[Variant], costs: dict[str, float]) -> str:
    lines = ["| stack | variant | µs per request | µs over bare | µs over empty middleware |",
             "|---|---|---:|---:|---:|"]
    for v in (v for v in selected if v.name in costs):  # in process: this tree's variants only
        over = [f"{costs[v.name] - costs[base]:+.2f}" if base in costs else "-" for base in _baselines(v)]
        lines.append(f"| {v.stack} | {v.label} | {costs[v.name]:.2f} | {' | '.join(over)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", help="comma-separated variant names")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--quiet", type=float, default=0.10,
                        help="before each measurement, wait (up to 2 min) until the machine's other CPU load "
                             "is below this fraction; negative: do not wait")
    parser.add_argument("--micro-calls", type=int, default=20_000,
                        help="in-process calls per repeat for the per-request cost table (0: skip it)")
    baseline.add_argument(parser)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    selected = [BY_NAME[n] for n in args.only.split(",")] if args.only else list(VARIANTS)
    missing = []
    for v in selected:
        if v.package:
            try:
                metadata.version(v.package)
            except metadata.PackageNotFoundError:
                missing.append(v)
    if missing:
        print("not installed, skipped: " + ", ".join(v.name for v in missing), file=sys.stderr)
        selected = [v for v in selected if v not in missing]
    costs = micro(selected, args.micro_calls) if args.micro_calls else {}
    if args.baseline_tree:  # our variants once more, served from the other checkout
        selected += [Variant(v.name + baseline.SUFFIX, v.stack, f"{v.label}, from the baseline tree", v.traced)
                     for v in list(selected) if "-ours" in v.name]
    results = run(selected, args.duration, args.rounds, args.quiet if args.quiet >= 0 else None,
                  baseline_tree=args.baseline_tree)
    body = table(selected, results)
    checks = verdicts(results)
    quiet_note = (
        f"each measurement started once the machine's other CPU load was below {args.quiet:.0%} "
        f"({results.busy_runs} of {results.measurements} waited 2 min in vain and ran anyway)"
        if args.quiet >= 0 else "measurements started without waiting for a quiet machine"
    )
    header = (
        f"# HTTP middleware overhead\n\n"
        f"`python -m benchmarks.middleware_overhead --duration {args.duration:g} --rounds {args.rounds}`, "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs ({platform.machine()}), "
        f"Python {platform.python_version()}. Every variant serves the same JSON handler on `/items/{{id}}` "
        f"from its own process, all servers pinned to one CPU, `wrk -t1 -c32` pinned to the other, "
        f"loopback, `GET {PATH}` with an `X-API-Key` header and a `traceparent` (traced rows) or a padding "
        f"header of the same size (all others); {args.rounds} rounds of {args.duration:g} s per "
        f"measurement, {quiet_note}.\n\n"
        f"**vs bare** and **vs empty** are measured head to head: the variant and the baseline are loaded "
        f"at the same time, on the same CPU, by two wrk processes, and the ratio is the baseline's server "
        f"CPU time per request over the variant's (equal to the ratio of requests/s each would reach "
        f"alone), median of the rounds. Whatever else the machine does during those seconds slows both "
        f"alike, which matters on a shared machine, where the same variant measured alone varies by "
        f"tens of percent from one round to the next (the *alone* columns: wrk against one server, "
        f"ratios as medians of each round's ratio).\n\n{versions()}.\n\n"
    )
    text = header + body + "\n\n" + "\n".join(checks) + "\n"
    if costs:
        text += (
            "\n## In process: what the middleware itself costs\n\n"
            f"The same apps called in process, no sockets: aiohttp's dispatch (`Application._handle`: "
            f"router, middleware chain if any, handler) on a mocked request after the app's startup, or the "
            f"whole ASGI app with a fixed scope; after a warm-up pass, best of 7 × "
            f"{args.micro_calls:,} calls, taken round-robin over the variants, so other load on the machine "
            f"hardly shows.\n\n"
            + micro_table(selected, costs) + "\n"
        )
    if costs and "aiohttp-ours" in costs:
        text += (
            "\n### Where our aiohttp integration's time goes\n\n"
            "Each step of its per-request work timed alone (best of 5 × 100,000, `timeit`), after the "
            "first request of a route and label combination:\n\n" + breakdown() + "\n"
        )
    print()
    print(body)
    print("\n".join(checks))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
