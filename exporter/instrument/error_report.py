"""Error records: what support needs to look an error id up, built from an unhandled exception.

A record (the ``error`` event of ``POST /api/v1/events``) holds the error id
of the 500 body, the exception type, route template, tier, user (hashed by
the exporter on arrival), time, and the exception's message and stack trace
with secrets and identifiers redacted (:func:`exporter.logs.redact`: header
values, credentials, the request's API key, user id and raw path, e-mail
addresses, UUIDs, hex ids, long digit runs) and capped at ``MAX_REPORT_CHARS``
together (the innermost frames kept).

:func:`fingerprint` groups records of the same bug: the exception type and
its innermost ``FRAMES`` frames as file basename and function name, without
line numbers or the message, so a line shift or an id in a message does not
split a group.

:class:`ErrorReporter` sends records to an exporter through an
:class:`~exporter.instrument.client.EventClient` from a bounded queue: a
request never waits on it or fails because of it; a full queue drops the
record and counts it (``dropped``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
import traceback
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol

from exporter.logs import redact

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 1024
MAX_REPORT_CHARS = 4096  # message and trace together
MAX_TYPE_CHARS = 200
FRAMES = 5
FINGERPRINT_CHARS = 16
_FRAME = re.compile(r'^\s*File "([^"]*)", line \d+, in (\S+)', re.MULTILINE)
_CHAIN = re.compile(r"^(?:The above exception was the direct cause|During handling of the above exception)",
                    re.MULTILINE)


class ErrorSink(Protocol):
    """Where records go: ``report`` never blocks and never raises; False when the record was dropped."""

    def report(self, record: dict[str, Any]) -> bool: ...


def type_name(exc: BaseException) -> str:
    """``ValueError`` for built-ins, ``module.Class`` otherwise (two apps' ``Error`` classes differ)."""
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    return name[:MAX_TYPE_CHARS]


def fingerprint(error_type: str, trace: str, frames: int = FRAMES) -> str:
    """Hex digest of the type and the innermost ``frames`` frames (basename:function) of the last exception."""
    last = _CHAIN.split(trace)[-1]
    found = [f"{path.replace(chr(92), '/').rsplit('/', 1)[-1]}:{function}" for path, function in _FRAME.findall(last)]
    key = "\n".join([error_type, *found[-frames:]])
    return hashlib.sha256(key.encode()).hexdigest()[:FINGERPRINT_CHARS]


def _cap(message: str, trace: str) -> tuple[str, str]:
    message = message[:MAX_MESSAGE_CHARS]
    room = MAX_REPORT_CHARS - len(message)
    if len(trace) > room:
        trace = "...\n" + trace[-(room - 4):]  # the innermost frames and the exception line
    return message, trace


def error_record(exc: BaseException, error_id: str, route: str, tier: str, user: str | None = None,
                 secrets: Iterable[str | None] = (), now: float | None = None) -> dict[str, Any]:
    """The ``error`` event for ``exc`` (see the module docstring); ``secrets`` are redacted wherever they appear."""
    given = {s for s in secrets if s and len(s) >= 4}
    # A raw path's own segments too (its ids), where the template has a parameter.
    template = set(route.split("/"))
    given |= {part for s in given if s.startswith("/") for part in s.split("?")[0].split("/")
              if len(part) >= 4 and part not in template}
    found = sorted(given, key=len, reverse=True)
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001  # pragma: no cover - a broken __str__
        message = ""
    try:
        trace = "".join(traceback.format_exception(exc))
    except Exception:  # noqa: BLE001  # pragma: no cover
        trace = repr(exc)
    message, trace = _cap(redact(message, found), redact(trace, found))
    record: dict[str, Any] = {"type": "error", "id": error_id, "error_id": error_id, "tier": tier, "route": route,
                              "error_type": type_name(exc), "message": message, "trace": trace,
                              "time": time.time() if now is None else now}
    if user:
        record["user_id"] = user
    return record


class ErrorReporter:
    """An :class:`ErrorSink` sending records through an ``EventClient`` (library mode).

    ``report`` appends to a queue of at most ``max_pending`` records and
    returns; a task on the running loop hands them to the client, whose own
    queue batches and retries. Past ``max_pending`` a record is dropped and
    counted in ``dropped``: a down exporter costs the service nothing.
    """

    def __init__(self, client: Any, max_pending: int = 1000):
        self.client = client
        self.max_pending = max_pending
        self.dropped = 0
        self.sent = 0
        self._pending: deque[dict[str, Any]] = deque()
        self._task: asyncio.Task | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def report(self, record: dict[str, Any]) -> bool:
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return False
        self._pending.append(record)
        if self._task is None or self._task.done():
            try:
                self._task = asyncio.get_running_loop().create_task(self._drain())
            except RuntimeError:  # no running loop: sent by the next report or close()
                pass
        return True

    async def _drain(self) -> None:
        while self._pending:
            record = self._pending.popleft()
            try:
                await self.client.send(record)
                self.sent += 1
            except asyncio.CancelledError:
                self._pending.appendleft(record)
                raise
            except Exception as exc:  # noqa: BLE001 - the exporter's trouble is never the service's
                self.dropped += 1
                log.warning("error record not sent: %s", type(exc).__name__)

    async def close(self) -> None:
        """Hand everything pending to the client (then close the client yourself, which flushes it)."""
        if self._task is not None and not self._task.done():
            with contextlib.suppress(Exception):
                await self._task
        await self._drain()


def sink_of(report_errors: Any) -> ErrorSink | None:
    """The sink for an integration's ``report_errors`` argument: a sink, an ``EventClient``, or None (off)."""
    if report_errors is None or hasattr(report_errors, "report"):
        return report_errors
    if hasattr(report_errors, "send"):
        return ErrorReporter(report_errors)
    raise TypeError("report_errors: expected an EventClient, an ErrorReporter or None")
