"""Attack: a 1 MB gzip of 1 GiB of zeros, sent with ``Content-Encoding: gzip`` (issue 19, item 1).

Each bomb goes to a real exporter process over 127.0.0.1, whole, on its own
connection; the client then reads until the server closes (at most
``--wait`` s), as an attacker keeping the connection open would. Reported
per target: the status, and the server's CPU time per bomb (all threads,
from /proc schedstat, once it has gone quiet), unauthenticated (``/healthz``,
an unknown path, ``/api/v1/events`` without a token) and with a valid
ingest token. Then ``/healthz`` latency (p50 and max, one probe every 50 ms)
while ``--burst`` bombs go to ``/healthz`` back to back.

    flock /tmp/clary-bench.lock .venv/bin/python -m benchmarks.security.gzip_bomb [--tree /tmp/base-1c80776]
"""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import threading
import time
import zlib
from pathlib import Path

from benchmarks.security.exporter_process import INGEST_TOKEN, Exporter, add_tree_argument, exporter, raw_request

BOMB_PATH = Path("/tmp/clary-gzip-bomb-1gib.gz")
INFLATED = 1 << 30
TARGETS = (
    ("POST /healthz", "/healthz", {}),
    ("POST /no/such/path", "/no/such/path", {}),
    ("POST /api/v1/events, no token", "/api/v1/events", {}),
    ("POST /api/v1/events, valid token", "/api/v1/events", {"Authorization": f"Bearer {INGEST_TOKEN}"}),
)


def bomb() -> bytes:
    """1 GiB of zeros, gzipped (about 1 MB), made once and kept in /tmp."""
    if not BOMB_PATH.exists():
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        zeros = bytes(1 << 20)
        parts = [packer.compress(zeros) for _ in range(INFLATED >> 20)]
        BOMB_PATH.write_bytes(b"".join(parts) + packer.flush())
    return BOMB_PATH.read_bytes()


def send_bomb(port: int, path: str, headers: dict[str, str], payload: bytes, wait: float) -> str:
    """Send the bomb on a fresh connection; the status line's code, or what went wrong."""
    raw = raw_request("POST", path, {"Content-Encoding": "gzip", "Content-Type": "application/json", **headers},
                      payload)
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed before the whole bomb was sent: what it already answered still counts
        answer = b""
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline and (chunk := sock.recv(65536)):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    status = answer.split(b"\r\n", 1)[0].split(b" ")[1:2]
    return status[0].decode() if status else "no answer"


def cpu_per_bomb(served: Exporter, path: str, headers: dict[str, str], payload: bytes, count: int,
                 wait: float) -> tuple[str, float]:
    statuses = set()
    before = served.settled_cpu()
    for _ in range(count):
        statuses.add(send_bomb(served.port, path, headers, payload, wait))
    spent = served.settled_cpu() - before
    return "/".join(sorted(statuses)), spent / count


def healthz_during_burst(served: Exporter, payload: bytes, burst: int, wait: float) -> tuple[float, float, int]:
    """/healthz latency (p50, max, in seconds) and failures while ``burst`` bombs go to /healthz."""
    latencies: list[float] = []
    failures = 0
    done = threading.Event()

    def probe() -> None:
        nonlocal failures
        while not done.is_set():
            started = time.perf_counter()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                conn.close()
                latencies.append(time.perf_counter() - started)
            except OSError:
                failures += 1
            time.sleep(0.05)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    for _ in range(burst):
        send_bomb(served.port, "/healthz", {}, payload, wait)
    served.settled_cpu()
    done.set()
    prober.join(35)
    return statistics.median(latencies), max(latencies), failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_tree_argument(parser)
    parser.add_argument("--count", type=int, default=3, help="bombs per target (default 3)")
    parser.add_argument("--burst", type=int, default=5, help="bombs in a row for the /healthz probe (default 5)")
    parser.add_argument("--wait", type=float, default=20.0, help="seconds a bomb's connection is kept open at most")
    args = parser.parse_args()
    payload = bomb()
    print(f"tree {args.tree}; bomb {len(payload) / 1e6:.2f} MB gzip of {INFLATED >> 30} GiB of zeros")
    with exporter(args.tree) as served:
        print("| target | status | server CPU per bomb |")
        print("|---|---|---|")
        for name, path, headers in TARGETS:
            status, cpu = cpu_per_bomb(served, path, headers, payload, args.count, args.wait)
            print(f"| {name} | {status} | {cpu * 1000:.1f} ms |")
        p50, worst, failures = healthz_during_burst(served, payload, args.burst, args.wait)
        print(f"/healthz during {args.burst} bombs in a row: p50 {p50 * 1000:.1f} ms, max {worst * 1000:.1f} ms, "
              f"{failures} failed")


if __name__ == "__main__":
    main()
