"""A small ASGI client: one HTTP request through an ASGI app, with control over ``send`` and disconnects.

Tests drive the app directly so that they can stop the client mid-stream,
make ``send`` fail or cancel the application.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field


@dataclass
class Reply:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    complete: bool = False

    def json(self):
        return json.loads(self.body)


async def call(app, method: str = "GET", path: str = "/", headers: dict | None = None, *,
               on_send=None, disconnect: asyncio.Event | None = None, body: bytes = b"",
               spec_version: str = "2.4") -> Reply:
    """Run one HTTP request through ``app``; ``on_send(message)`` may block or raise."""
    raw_path = path.encode("utf-8", "surrogateescape")
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": spec_version}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path, "raw_path": raw_path, "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()],
    }
    sent_request = False

    async def receive():
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": body, "more_body": False}
        await (disconnect.wait() if disconnect is not None else asyncio.Event().wait())
        return {"type": "http.disconnect"}

    reply = Reply()

    async def send(message):
        if on_send is not None:
            await on_send(message)
        if message["type"] == "http.response.start":
            reply.status = message["status"]
            reply.headers = {k.decode(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            reply.body += message.get("body", b"")
            reply.complete = not message.get("more_body", False)

    await app(scope, receive, send)
    return reply
