"""Attack: urgent-feedback notifications (issue 19, item 7).

Three attacks on a real exporter process, each with its own data directory
and a local webhook receiver on 127.0.0.1 that records every request:

1. Phishing text: one urgent bug whose text is ``<!channel> <https://evil.example|Reset
   your password> @everyone``. Reported per receiver format: whether the
   body that arrived is free of live markup (a Slack command, link or
   mention, a bare URL, an unbroken @-mention, an HTML tag). The old
   exporter only has plain URLs (JSON); this tree also gets a Slack and an
   HTML receiver.
2. Burst: one API key sends up to ``--burst`` urgent bugs (distinct texts)
   from 32 concurrent connections for at most ``--burst-seconds``.
   Reported: 201 and 429 answers, and deliveries the webhook received.
3. Disk full: the data directory is a small tmpfs (``mount -t tmpfs``, so
   this needs root). An urgent bug is stored while the receiver answers 503;
   then the file system is filled to ENOSPC and the receiver answers 200.
   Reported: deliveries in the next ``--seconds`` (the old exporter deletes
   the row after each success, fails, and sends it again about once a
   second), after space is freed, and the outbox rows left at exit.

Run against this tree, or ``--tree DIR`` for another checkout (its own
``exporter`` package through PYTHONPATH, nothing written into it)::

    flock /tmp/clary-bench.lock .venv/bin/python -m benchmarks.security.notifications [--tree DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

import aiohttp
import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
SECRET = "attack-hmac-secret-0123456789abcdef"
KEY = "attack-api-key-professional"
PHISH = "<!channel> <https://evil.example|Reset your password> @everyone"
LIVE = [  # what a receiver would act on, if it arrived as is
    ("Slack command", re.compile(r"<!(channel|here|everyone)")),
    ("Slack link", re.compile(r"<https?://")),
    ("bare URL", re.compile(r"https?://")),
    ("@-mention", re.compile(r"@(?!\u200b)(everyone|here|channel)")),
]


class Receiver:
    """A webhook endpoint on 127.0.0.1: records every request body; answers ``status``."""

    def __init__(self):
        self.status = 200
        self.bodies: list[tuple[float, str, str]] = []  # (time, path, body)
        self.port = _free_port()
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        self.bodies.append((time.monotonic(), request.path, (await request.read()).decode("utf-8", "replace")))
        return web.Response(status=self.status)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def count(self, path: str | None = None, since: float = 0.0) -> int:
        return sum(1 for at, p, _ in self.bodies if at >= since and (path is None or p == path))

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/{name}", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARY_")}
    return {**env, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1", "CLARY_HMAC_SECRET": SECRET}


def _has_formats(tree: Path) -> bool:
    """Whether the tree's exporter takes webhook entries with a format."""
    probe = [sys.executable, "-c", "import exporter.api.webhook_text"]
    return subprocess.run(probe, cwd=tree, env=_env(tree), capture_output=True, check=False).returncode == 0


def _start(tree: Path, work: Path, port: int, config: Path, data_dir: Path) -> subprocess.Popen:
    with open(work / "exporter.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "exporter.cli", "--listen-address", f"127.0.0.1:{port}",
                                 "--config", str(config), "--data-dir", str(data_dir)],
                                cwd=tree, env=_env(tree), stdout=log, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _mount(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, check=False)


@contextlib.asynccontextmanager
async def exporter(tree: Path, work: Path, data_dir: Path, webhooks: list):
    config = work / "clary.yml"
    config.write_text(yaml.safe_dump({
        "api_keys": {KEY: {"tier": "professional", "user": "attacker"}}, "webhooks": webhooks,
        "collectors": {"system": False, "gpu": False}}))
    port = _free_port()
    proc = _start(tree, work, port, config, data_dir)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                if proc.poll() is not None:
                    raise RuntimeError(f"exporter exited {proc.returncode}: {(work / 'exporter.log').read_text()[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{base}/readyz") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.1)
            yield base, session
    finally:
        _stop(proc)


async def _urgent(session: aiohttp.ClientSession, base: str, text: str) -> int:
    async with session.post(f"{base}/api/v1/feedback", json={"type": "bug", "rating": 1, "text": text},
                            headers={"X-API-Key": KEY}) as resp:
        await resp.read()
        return resp.status


async def _settle(receiver: Receiver, expect: int = 1, quiet: float = 2.0, limit: float = 60.0) -> None:
    """Until ``expect`` deliveries arrived and then none for ``quiet`` seconds (or ``limit`` passed)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if len(receiver.bodies) >= expect and time.monotonic() - receiver.bodies[-1][0] >= quiet:
            return
        await asyncio.sleep(0.2)


def _live(body: str) -> list[str]:
    try:
        strings = json.dumps(json.loads(body), ensure_ascii=False)
    except ValueError:
        strings = body
    return [name for name, pattern in LIVE if pattern.search(strings)]


async def phishing(tree: Path, work: Path) -> dict[str, str]:
    async with Receiver() as receiver:
        hooks: list = [receiver.url("plain")]
        if _has_formats(tree):
            hooks += [{"url": receiver.url("slack"), "format": "slack"},
                      {"url": receiver.url("html"), "format": "html"}]
        async with exporter(tree, work, work / "data-phishing", hooks) as (base, session):
            assert await _urgent(session, base, PHISH) == 201
            await _settle(receiver, expect=len(hooks), quiet=1.5, limit=20)
    result = {}
    for _, path, body in receiver.bodies:
        live = _live(body)
        name = {"/plain": "json (plain URL)", "/slack": "slack", "/html": "html"}[path]
        result[name] = "yes" if not live else "no: " + ", ".join(live)
    return result


async def burst(tree: Path, work: Path, count: int, seconds: float) -> dict[str, object]:
    statuses: dict[int, int] = {}
    sent = 0
    async with Receiver() as receiver, \
            exporter(tree, work, work / "data-burst", [receiver.url("plain")]) as (base, session):
        started = time.monotonic()

        async def worker() -> None:
            nonlocal sent
            while sent < count and time.monotonic() - started < seconds:
                sent += 1
                status = await _urgent(session, base, f"urgent report {sent}: export fails on page 3")
                statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(32)))
        took = time.monotonic() - started
        await _settle(receiver, quiet=3.0, limit=120)
    return {"sent": sent, "seconds": round(took, 1), "201": statuses.get(201, 0), "429": statuses.get(429, 0),
            "other": sum(n for s, n in statuses.items() if s not in (201, 429)), "deliveries": receiver.count()}


def _outbox_rows(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]


def _fill(directory: Path) -> int:
    """Write a file until the file system is full; returns the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    with open(directory / "filler", "wb", buffering=0) as fh:
        while True:
            try:
                written += fh.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return written
                chunk = chunk[: len(chunk) // 2]


async def disk_full(tree: Path, work: Path, seconds: float) -> dict[str, object]:
    mount = work / "tmpfs"
    mount.mkdir()
    mounted = _mount(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)])
    if mounted.returncode:
        return {"skipped": f"mount -t tmpfs failed: {mounted.stderr.decode().strip()[:200]}"}
    try:
        async with Receiver() as receiver:
            receiver.status = 503
            async with exporter(tree, work, mount / "data", [receiver.url("plain")]) as (base, session):
                assert await _urgent(session, base, "crash on save, export lost") == 201
                while not receiver.bodies:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)  # the failed attempt is recorded
                filled = _fill(mount)
                receiver.status = 200
                start = time.monotonic()
                await asyncio.sleep(seconds)
                during = receiver.count(since=start)
                (mount / "filler").unlink()  # space again
                freed = time.monotonic()
                await asyncio.sleep(min(seconds, 70.0))  # the store is retried with its own backoff
                after = receiver.count(since=freed)
            left = _outbox_rows(mount / "data" / "clary.db")  # after a clean shutdown
        return {"filled_bytes": filled, "seconds": seconds, "deliveries_disk_full": during,
                "deliveries_after_space_freed": after, "outbox_rows_at_exit": left}
    finally:
        _mount(["umount", str(mount)])


async def main_async(args) -> dict:
    tree = (args.tree or ROOT).resolve()
    with tempfile.TemporaryDirectory(prefix="clary-notify-attack-") as tmp:
        work = Path(tmp)
        return {
            "tree": str(tree),
            "phishing_escaped": await phishing(tree, work),
            "burst": await burst(tree, work, args.burst, args.burst_seconds),
            "disk_full": await disk_full(tree, work, args.seconds),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, help="another checkout to attack (default: this tree)")
    parser.add_argument("--burst", type=int, default=2000, help="urgent feedback requests at most (default 2000)")
    parser.add_argument("--burst-seconds", type=float, default=10.0, help="burst duration at most (default 10)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds the disk stays full (default 10)")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(main_async(args)), indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
