"""Attack: idle, slow-header, slow-body and silent keep-alive connections, then a connection flood (issue 19, item 9).

Scaled to a shared 2-CPU machine and a run under a minute: ``--idle`` 400
connections that send nothing, ``--slow-header`` 400 that send a request
line and then one header byte every 2 s, ``--slow-body`` 150 authenticated
``POST /api/v1/events`` announcing 1 MB and sending one byte every 2 s, and
``--keepalive`` 50 that make one request and then stay silent; 1,000 in
all, under the default cap of 1,024. The exporter runs with the timeouts
scaled down to fit (``--header-timeout 5 --body-timeout 10
--keepalive-timeout 15`` via CLARY_* variables; defaults 10 / 60 / 75 s), the
connection cap at its default. Reported: connections of each kind still
held after ``--seconds`` (30), and ``/metrics`` (a new connection each
second) latency and failures meanwhile. Then ``--flood`` (1,500) idle
connections at once: how many the server holds, and whether ``/metrics``
still answers.

    flock /tmp/clary-bench.lock .venv/bin/python -m benchmarks.security.slow_clients [--tree /tmp/base-1c80776]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time

from benchmarks.security.exporter_process import INGEST_TOKEN, add_tree_argument, exporter, raw_request

TRICKLE_SECONDS = 2.0


async def _until_closed(reader: asyncio.StreamReader) -> None:
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, OSError):
        pass


async def _trickle(writer: asyncio.StreamWriter, first: bytes, byte: bytes) -> None:
    writer.write(first)
    while True:
        await asyncio.sleep(TRICKLE_SECONDS)
        writer.write(byte)
        await writer.drain()


async def client(port: int, kind: str, closed: dict[str, int], opened: dict[str, int]) -> None:
    """One attacking connection; counted in ``closed`` once the server has closed it."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        closed[kind] += 1
        return
    opened[kind] += 1
    trickle = None
    if kind == "slow-header":
        trickle = _trickle(writer, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", b"a")
    elif kind == "slow-body":
        head = raw_request("POST", "/api/v1/events", {"Authorization": f"Bearer {INGEST_TOKEN}"}, length=1 << 20)
        trickle = _trickle(writer, head + b'{"events": [', b" ")
    elif kind == "keepalive":
        writer.write(raw_request("GET", "/healthz"))
        await reader.readuntil(b"\r\n\r\n")
    waits = [asyncio.ensure_future(_until_closed(reader))]
    if trickle is not None:
        waits.append(asyncio.ensure_future(trickle))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        closed[kind] += 1
    except (ConnectionError, OSError):
        closed[kind] += 1
    finally:
        for task in waits:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a write to a closed connection is the expected end
            task.cancel()
        writer.close()


async def scrape(port: int) -> tuple[float | None, str]:
    """One /metrics scrape on a new connection: (seconds or None on failure, body)."""
    started = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        writer.write(raw_request("GET", "/metrics", {"Connection": "close"}))
        body = await asyncio.wait_for(reader.read(-1), 10)
        writer.close()
        if not body.startswith(b"HTTP/1.1 200"):
            return None, ""
        return time.perf_counter() - started, body.decode(errors="replace")
    except (OSError, TimeoutError):
        return None, ""


def _sample(text: str, name: str) -> str:
    found = re.findall(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return found[0] if found else "n/a"


async def run(port: int, counts: dict[str, int], seconds: float, flood: int) -> None:
    closed = dict.fromkeys(counts, 0)
    opened = dict.fromkeys(counts, 0)
    clients = []
    for kind, count in counts.items():
        for _ in range(count):
            clients.append(asyncio.ensure_future(client(port, kind, closed, opened)))
            if len(clients) % 100 == 0:
                await asyncio.sleep(0.05)  # the listen backlog is 128
    latencies, failures, last = [], 0, ""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        took, body = await scrape(port)
        if took is None:
            failures += 1
        else:
            latencies.append(took)
            last = body
        await asyncio.sleep(1.0)
    print(f"| kind | opened | still held after {seconds:.0f} s |")
    print("|---|---|---|")
    for kind in counts:
        print(f"| {kind} | {opened[kind]} | {opened[kind] - closed[kind]} |")
    worst = max(latencies) * 1000 if latencies else float("nan")
    print(f"/metrics during the attack: {len(latencies)} answered (max {worst:.0f} ms), {failures} failed")
    closes = re.findall(r'^clary_exporter_connections_closed_total\{reason="(\w+)"\} (\S+)$', last, re.MULTILINE)
    print(f"closed by the exporter: {dict(closes) or 'n/a (no such metric)'}")
    for task in clients:
        task.cancel()
    await asyncio.gather(*clients, return_exceptions=True)

    flood_closed = {"flood": 0}
    flood_opened = {"flood": 0}
    flooders = [asyncio.ensure_future(client(port, "flood", flood_closed, flood_opened)) for _ in range(flood)]
    await asyncio.sleep(5)
    took, body = await scrape(port)
    held = flood_opened["flood"] - flood_closed["flood"]
    print(f"flood of {flood} idle connections: {held} still held after 5 s; /metrics "
          + (f"answered in {took * 1000:.0f} ms, connections_open {_sample(body, 'clary_exporter_connections_open')}"
             if took is not None else "failed"))
    for task in flooders:
        task.cancel()
    await asyncio.gather(*flooders, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_tree_argument(parser)
    parser.add_argument("--idle", type=int, default=400)
    parser.add_argument("--slow-header", type=int, default=400)
    parser.add_argument("--slow-body", type=int, default=150)
    parser.add_argument("--keepalive", type=int, default=50)
    parser.add_argument("--flood", type=int, default=1500)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--header-timeout", default="5")
    parser.add_argument("--body-timeout", default="10")
    parser.add_argument("--keepalive-timeout", default="15")
    args = parser.parse_args()
    env = {"CLARY_HEADER_TIMEOUT": args.header_timeout, "CLARY_BODY_TIMEOUT": args.body_timeout,
           "CLARY_KEEPALIVE_TIMEOUT": args.keepalive_timeout}
    counts = {"idle": args.idle, "slow-header": args.slow_header, "slow-body": args.slow_body,
              "keepalive": args.keepalive}
    print(f"tree {args.tree}; timeouts header {args.header_timeout} s, body {args.body_timeout} s, "
          f"keep-alive {args.keepalive_timeout} s")
    with exporter(args.tree, env) as served:
        asyncio.run(run(served.port, counts, args.seconds, args.flood))


if __name__ == "__main__":
    main()
