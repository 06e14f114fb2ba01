"""Several exporter replicas on one store, as a load balancer sees them (tests/e2e/test_scale_out.py).

- :class:`Replica`: one exporter process that can be SIGKILLed and started
  again on the same port, data dir and database;
- :class:`RoundRobin`: spreads requests over the replicas and retries one
  that was not acknowledged (connection error, timeout, 5xx) on the next
  replica, as a load balancer would; only a 2xx counts as acknowledged;
- :func:`webhook_counter`: a real aiohttp receiver counting urgent-feedback
  posts per feedback id, with each post's delivery key and arrival time.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from tests import support
from tests.api_helpers import thread_server


class Replica:
    """One exporter process on a fixed port; ``kill`` (SIGKILL) and ``start`` again keep port, data dir and store."""

    def __init__(self, index: int, config: Path, data_dir: Path, database_url: str, log_dir: Path):
        self.index, self.port = index, support.free_port()
        self.target = f"{support.LOOPBACK}:{self.port}"
        self.url = f"http://{self.target}"
        self.cmd = support.exporter_cmd("--config", str(config), "--listen-address", self.target,
                                        "--data-dir", str(data_dir), "--database-url", database_url)
        self.log_dir, self.starts = log_dir, 0
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> None:
        self.starts += 1
        if self._log:
            self._log.close()
        self._log = open(self.log_dir / f"replica-{self.index}-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=support.ROOT)

    def ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"replica {self.index} exited: {self.log_tail()}")
        return support.http_get(f"{self.url}/readyz", timeout=1)[0] == 200

    def wait_ready(self, timeout: float = 30) -> None:
        support.wait_until(self.ready, timeout, interval=0.1, what=f"replica {self.index} ready")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, whatever was in flight is lost unless it was committed."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            support.stop(self.proc)
        if self._log:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 2000) -> str:
        logs = sorted(self.log_dir.glob(f"replica-{self.index}-*.log"))
        return logs[-1].read_text(errors="replace")[-chars:] if logs else ""


@contextlib.contextmanager
def started(replicas: list[Replica], timeout: float = 45) -> Iterator[list[Replica]]:
    """Start every replica at once (their start-ups overlap), wait until all are ready, stop them afterwards."""
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            replica.wait_ready(timeout)
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()


@dataclass
class Answer:
    replica: int
    status: int
    body: dict | list | None


@dataclass
class RoundRobin:
    """Requests spread over ``urls`` in turn; not acknowledged (no answer, 5xx) -> the next replica.

    ``failovers`` counts the retries elsewhere (the test checks the kill was
    felt); ``acknowledged[i]`` the 2xx answers replica ``i`` gave.
    """

    urls: list[str]
    timeout: float = 10.0
    failovers: int = 0
    acknowledged: collections.Counter = field(default_factory=collections.Counter)

    def __post_init__(self):
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def request(self, path: str, body: dict | None = None, headers: dict | None = None, method: str = "POST",
                replica: int | None = None) -> Answer:
        """Send to ``replica`` (or the next in turn); every replica is tried once before giving up."""
        with self._lock:
            first = next(self._turn) % len(self.urls) if replica is None else replica
        last = Answer(first, 0, None)
        for step in range(len(self.urls)):
            index = (first + step) % len(self.urls)
            if step:
                with self._lock:
                    self.failovers += 1
            last = self._send(index, path, body, headers or {}, method)
            if 0 < last.status < 500:
                if 200 <= last.status < 300:
                    with self._lock:
                        self.acknowledged[index] += 1
                return last
        return last

    def _send(self, index: int, path: str, body: dict | None, headers: dict, method: str) -> Answer:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.urls[index] + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (OSError, ValueError):  # refused, reset, timed out, a half-read body: not acknowledged
            return Answer(index, 0, None)
        try:
            return Answer(index, status, json.loads(raw) if raw else None)
        except ValueError:
            return Answer(index, status, None)


class WebhookCounter:
    """Urgent-feedback posts per feedback id (from the JSON body), as one receiver saw them."""

    def __init__(self):
        self.posts: collections.Counter[str] = collections.Counter()
        # feedback id -> (X-Clary-Delivery, time.monotonic() on arrival) of every post
        self.deliveries: dict[str, list[tuple[str, float]]] = collections.defaultdict(list)
        self.url = ""

    async def _hook(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.posts[payload["feedback"]["id"]] += 1
        self.deliveries[payload["feedback"]["id"]].append(
            (request.headers.get("X-Clary-Delivery", ""), time.monotonic()))
        return web.json_response({"ok": True})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        return app


@contextlib.contextmanager
def webhook_counter() -> Iterator[WebhookCounter]:
    counter = WebhookCounter()
    with thread_server(counter.app()) as server:
        counter.url = f"{server.url}/hook"
        yield counter
