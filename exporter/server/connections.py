"""The listener's connection limits: header, body and idle timeouts, a connection cap, compressed bodies.

aiohttp alone holds a connection as long as its client likes: the keep-alive
timeout is 3,630 s, nothing bounds the time a client takes to send its
headers or its body, and nothing caps the number of connections, so a few
thousand idle or trickling sockets stay open. aiohttp has no public hook per
connection phase, so :meth:`ConnectionGuard.listen` serves each connection
through a thin protocol wrapper around aiohttp's own, and the guard's
middleware (outermost) marks when a request starts and ends. A connection is
in one of three phases, each with its deadline:

- ``header``: from accept, or from the first byte after an idle spell, until
  its request reaches the app: ``header_timeout``;
- ``request``: a handler runs; the body must be complete ``body_timeout``
  after the request started, read by the handler or drained after it
  (a body the handler left unread is drained ``DRAIN_SECONDS`` at most);
- ``idle``: between a response and the next request's first byte:
  ``keepalive_timeout``.

One sweep (every second at most) closes connections past their deadline. At
``max_connections`` a new connection displaces the one that has waited
longest outside a request (idle, or still sending headers); when every
connection is inside a request, the new one is closed at once. Each closure
is counted in ``clary_exporter_connections_closed_total{reason}``.

The middleware also enforces the compressed-body policy (exporter.api.body):
aiohttp runs with ``auto_decompress=False``; a request with a
``Content-Encoding`` to a route not in ``DECODING`` gets 415, and any
compressed request whose body was not read to the end (refused, too large,
wrong credentials) is answered with ``Connection: close`` and its connection
closed instead of drained.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from aiohttp import web

from exporter.api.body import DECODING, content_encoding, unsupported
from exporter.config import Config
from exporter.families import new_family

HEADER, REQUEST, IDLE = "header", "request", "idle"
REASONS = ("header_timeout", "body_timeout", "idle", "limit")
SWEEP_MAX_SECONDS = 1.0
SWEEP_MIN_SECONDS = 0.05
# aiohttp's own keep-alive and lingering timers stay as backstops, later than the guard's sweep.
BACKSTOP_SECONDS = 2 * SWEEP_MAX_SECONDS
# A body its endpoint did not read (a refused request) is drained this long at most, as aiohttp drains it.
DRAIN_SECONDS = 10.0


def runner_options(config: Config) -> dict[str, Any]:
    """``web.AppRunner`` keyword arguments (public, passed on to aiohttp's protocol) that go with the guard."""
    return {
        "auto_decompress": False,  # bodies are inflated by the handlers that take them, after auth
        "keepalive_timeout": config.keepalive_timeout + BACKSTOP_SECONDS,
        # How long aiohttp drains a body its handler did not read; the guard's body timeout ends it first.
        "lingering_time": config.body_timeout + BACKSTOP_SECONDS,
    }


class _Connection:
    __slots__ = ("body", "body_deadline", "closing", "deadline", "key", "phase", "reason", "since", "transport")

    def __init__(self, key: object, transport: asyncio.BaseTransport, now: float, header_timeout: float):
        self.key = key  # aiohttp's protocol object: what a request knows its connection by (request.protocol)
        self.transport = transport
        self.phase = HEADER
        self.since = now
        self.deadline = now + header_timeout
        self.reason = "header_timeout"
        self.body: Any = None  # the request's StreamReader while its body is incomplete
        self.body_deadline = math.inf
        self.closing = False


class ConnectionGuard:
    """Per-connection phases and deadlines, the cap, and the counts behind the two metric families."""

    def __init__(self, config: Config, clock: Callable[[], float] | None = None):
        self.header_timeout = config.header_timeout
        self.body_timeout = config.body_timeout
        self.keepalive_timeout = config.keepalive_timeout
        self.max_connections = config.max_connections
        self.ssl_handshake_timeout = config.header_timeout
        self.sweep_seconds = min(SWEEP_MAX_SECONDS, max(SWEEP_MIN_SECONDS, min(
            config.header_timeout, config.body_timeout, config.keepalive_timeout) / 4))
        self.closed = dict.fromkeys(REASONS, 0)
        self._open: dict[Any, _Connection] = {}
        self._clock = clock
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def phases(self) -> dict[str, int]:
        """Open connections by phase (header, request, idle)."""
        counts = dict.fromkeys((HEADER, REQUEST, IDLE), 0)
        for conn in self._open.values():
            counts[conn.phase] += 1
        return counts

    # --- the listener ------------------------------------------------------------------------

    async def listen(self, server: Callable[[], asyncio.Protocol], host: str, port: int,
                     ssl_context: Any = None, backlog: int = 128) -> asyncio.AbstractServer:
        """Serve aiohttp's protocol factory (``runner.server``) on host:port, each connection guarded."""
        loop = asyncio.get_running_loop()
        self._clock = self._clock or loop.time
        listener = await loop.create_server(
            lambda: _GuardedProtocol(self, server), host, port, ssl=ssl_context, backlog=backlog,
            ssl_handshake_timeout=self.ssl_handshake_timeout if ssl_context is not None else None)
        self._sweeper = loop.call_later(self.sweep_seconds, self._sweep_and_rearm, loop)
        return listener

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def on_cleanup(self, app: web.Application) -> None:
        """Stop sweeping once the server has shut its connections (slow ones are closed until then)."""
        self.stop()

    def _sweep_and_rearm(self, loop: asyncio.AbstractEventLoop) -> None:
        self.sweep()
        self._sweeper = loop.call_later(self.sweep_seconds, self._sweep_and_rearm, loop)

    def sweep(self) -> None:
        """Close every connection past its phase's deadline or its body's."""
        now = self._clock()
        for conn in list(self._open.values()):
            if now >= conn.deadline:
                self._close(conn, conn.reason)
            elif conn.body is not None:
                if conn.body.is_eof():
                    conn.body = None
                elif now >= conn.body_deadline:
                    self._close(conn, "body_timeout")

    # --- connection events (the protocol wrapper and the middleware) -------------------------------

    def _admit(self, key: object, transport: asyncio.BaseTransport) -> _Connection | None:
        if len(self._open) >= self.max_connections:
            waiting = [c for c in self._open.values() if c.phase != REQUEST]
            if not waiting:
                self.closed["limit"] += 1
                return None
            self._close(min(waiting, key=lambda c: c.since), "limit")
        conn = _Connection(key, transport, self._clock(), self.header_timeout)
        self._open[key] = conn
        return conn

    def _reading(self, conn: _Connection) -> None:
        """Bytes arrived on an idle connection: a new request's headers are due."""
        if conn.body is None or conn.body.is_eof():
            conn.body = None
            now = self._clock()
            conn.phase, conn.since, conn.reason = HEADER, now, "header_timeout"
            conn.deadline = now + self.header_timeout

    def _forget(self, conn: _Connection) -> None:
        self._open.pop(conn.key, None)

    def _close(self, conn: _Connection, reason: str | None) -> None:
        if conn.closing:
            return
        conn.closing = True  # the wrapper drops whatever still arrives
        self._open.pop(conn.key, None)
        if reason is not None:
            self.closed[reason] += 1
        if conn.body is not None and conn.phase == IDLE and not conn.body.is_eof():
            conn.body.feed_eof()  # ends aiohttp's lingering read of a body no handler reads
        transport = conn.transport
        if transport.get_write_buffer_size():
            transport.abort()  # a client that does not read its response either
        else:
            transport.close()

    # --- the middleware ---------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        conn = self._open.get(request.protocol)
        if conn is not None:
            now = self._clock()
            conn.phase, conn.since, conn.deadline = REQUEST, now, math.inf
            content = request.content
            if not content.is_eof():
                conn.body, conn.body_deadline = content, now + self.body_timeout
        try:
            if request.headers.get("Content-Encoding") is None:  # the common case: one lookup
                return await handler(request)
            return await self._compressed(request, handler, conn)
        finally:
            if conn is not None and not conn.closing:
                now = self._clock()
                conn.phase, conn.since, conn.deadline, conn.reason = IDLE, now, now + self.keepalive_timeout, "idle"
                if conn.body is not None:
                    conn.body_deadline = min(conn.body_deadline, now + DRAIN_SECONDS)

    async def _compressed(self, request: web.Request, handler, conn: _Connection | None):
        encoding = content_encoding(request)
        if encoding is None:
            return await handler(request)
        route = request.match_info.route
        resource = route.resource
        if resource is None or (request.method, resource.canonical) not in DECODING:
            error: web.HTTPException = unsupported(encoding, "on this endpoint")
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                error = exc
            else:
                await self._close_undrained(request, response, conn)
                return response
        await self._close_undrained(request, error, conn)
        raise error

    async def _close_undrained(self, request: web.Request, response: web.StreamResponse,
                               conn: _Connection | None) -> None:
        """Send ``response`` now and close the connection, when the body was not read to its end."""
        content = request.content
        if content.is_eof():
            return
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        if conn is not None:
            self._close(conn, None)  # from here on the wrapper drops what still arrives
        elif request.transport is not None:  # a server without the guard's listener (aiohttp's test server)
            request.transport.close()
        content.feed_eof()  # the handler is done with it: aiohttp's lingering read ends at once

    # --- metrics ----------------------------------------------------------------------------------

    def collect(self):
        """``clary_exporter_connections_open`` and ``..._closed_total{reason}`` (a prometheus_client collector)."""
        opened = new_family("clary_exporter_connections_open")
        opened.add_metric([], len(self._open))
        closed = new_family("clary_exporter_connections_closed_total")
        for reason in REASONS:
            closed.add_metric([reason], self.closed[reason])
        return [opened, closed]


GUARD = web.AppKey("clary.connections", ConnectionGuard)


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard: admission, first bytes, closing."""

    __slots__ = ("_conn", "_factory", "_guard", "_inner")

    def __init__(self, guard: ConnectionGuard, factory: Callable[[], asyncio.Protocol]):
        self._guard = guard
        self._factory = factory
        self._inner: Any = None
        self._conn: _Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        inner = self._factory()
        conn = self._guard._admit(inner, transport)
        if conn is None:
            transport.close()
            return
        self._conn = conn
        self._inner = inner
        inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        if conn is None or conn.closing:
            return
        if conn.phase == IDLE:
            self._guard._reading(conn)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._guard._forget(self._conn)
        if self._inner is not None:
            self._inner.connection_lost(exc)
            self._inner = None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()
