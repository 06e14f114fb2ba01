"""The exporter served in-process exactly as ``clary-exporter`` serves it, and a raw HTTP/1.1 client.

``serving`` builds the app from ``make_config`` and listens on 127.0.0.1:0
through :meth:`ConnectionGuard.listen` with :func:`runner_options`, the way
``exporter.cli.serve`` does (aiohttp's test server would bypass both).
:class:`Raw` talks to it over a plain socket, so a test can send half a
request, a lying ``Content-Length`` or a control character in a header.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from benchmarks.security.exporter_process import raw_request as request  # noqa: F401 (for the tests)
from exporter.server import connections
from exporter.server.app import create_app
from tests.api_helpers import make_config

LOOPBACK = "127.0.0.1"
WAIT = 15.0  # generous bound on anything a test waits for; never a measured duration


@dataclass
class Served:
    app: web.Application
    registry: CollectorRegistry
    guard: connections.ConnectionGuard
    port: int

    def closed(self, reason: str) -> float:
        return self.registry.get_sample_value("clary_exporter_connections_closed_total", {"reason": reason})

    async def connect(self) -> Raw:
        reader, writer = await asyncio.open_connection(LOOPBACK, self.port)
        return Raw(reader, writer)


@contextlib.asynccontextmanager
async def serving(data_dir: Path, **overrides) -> AsyncIterator[Served]:
    config = make_config(data_dir, **overrides)
    registry = CollectorRegistry()
    app = create_app(config, registry)
    runner = web.AppRunner(app, access_log=None, **connections.runner_options(config))
    await runner.setup()
    guard = app[connections.GUARD]
    listener = await guard.listen(runner.server, LOOPBACK, 0)
    try:
        yield Served(app, registry, guard, listener.sockets[0].getsockname()[1])
    finally:
        listener.close()
        guard.stop()
        await runner.cleanup()


class Raw:
    """One client connection, bytes in and out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next response: status, headers (lower-case names), body (by Content-Length)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), WAIT)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), WAIT) if length else b""
        return status, headers, body

    async def closed_by_server(self) -> bool:
        """Wait (bounded) until the server closes the connection: EOF or a reset."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), WAIT):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.writer.close()

