"""Logging set-up: human text or one JSON object per line, with nothing secret in either.

Structured fields go in ``extra={"fields": {...}}`` so both formats carry
them; nothing here ever adds request headers, paths or user ids.

Third-party loggers are another matter: aiohttp logs a malformed request
(say, a control character in an ``Authorization`` header) at ERROR with a
traceback whose exception message quotes the raw header line, token and
all, a dozen lines per request, for anyone who can open a connection. So
the one handler carries a :class:`Redactor` filter, which sees every record
of every logger in the process (aiohttp.*, asyncio, ours) before it is
written:

- a malformed-request record (aiohttp's ``HttpProcessingError`` family)
  becomes one WARNING line naming the error class and its reason, without the peer,
  the header line or the traceback, and at most ``MALFORMED_BURST`` of them
  are written per ``MALFORMED_INTERVAL`` seconds; the next one written says
  how many were left out (as does :func:`flush` at shutdown);
- an exception logged by a third-party logger keeps its traceback but not
  its message (messages of parser and validation errors quote their input);
- every message, field and traceback is scrubbed of header values
  (``Authorization: ...``, ``X-API-Key: ...``, ``Bearer ...``) and of the
  configured secrets given to :func:`setup` (tokens, API keys, the HMAC
  secret, webhook URLs).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

MALFORMED_BURST = 10
MALFORMED_INTERVAL = 60.0
REDACTED = "<redacted>"
# Secrets shorter than this are not searched for (they would match ordinary words).
MIN_SECRET_LENGTH = 8
OWN_LOGGERS = ("exporter", "alerts", "dashboards")

_HEADER_VALUE = re.compile(
    r"(?i)\b(authorization|proxy-authorization|x-api-key|api-key|cookie|set-cookie)(\s*[:=]\s*)[^\r\n]*")
_CREDENTIAL = re.compile(r"(?i)\b(bearer(?=\s+\S)|basic(?=\s+[A-Za-z0-9+/]{8}))(\s+)[^\s'\"\\]+")
# The part of a parser error message before it quotes the input.
_REASON_END = re.compile(r"[:'\"\n\\]|\bb'")

try:  # the parser errors of aiohttp (a dependency of the exporter, not of every user of this module)
    from aiohttp.http_exceptions import HttpProcessingError as _ParserError
except ImportError:  # pragma: no cover
    _ParserError = ()  # type: ignore[assignment,misc]


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without header values, bearer/basic credentials and any of ``secrets``."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _HEADER_VALUE.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    return _CREDENTIAL.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)


# Identifiers an exception message may carry (error records, exporter.instrument.error_report): they
# would split one bug into many groups and put personal data on disk.
_IDENTIFIERS = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"  # e-mail addresses
    r"|\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"  # UUIDs
    r"|\b(?:0x)?(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{12,}\b"  # hex ids, digests, addresses
    r"|\d{5,}")  # long digit runs: account, phone and card numbers


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """:func:`scrub`, then e-mail addresses, UUIDs, hex ids and runs of 5+ digits replaced too."""
    return _IDENTIFIERS.sub(REDACTED, scrub(text, secrets))


def reason(exc: BaseException) -> str:
    """A parser error's reason without the input it quotes: ``Invalid header value char``."""
    text = str(getattr(exc, "message", "") or "").strip()
    text = _REASON_END.split(text, maxsplit=1)[0].strip(" .,")
    return text[:80] or "unparseable request"


class Redactor(logging.Filter):
    """The filter on the exporter's log handler (see the module docstring)."""

    def __init__(self, secrets: Iterable[str] = (), burst: int = MALFORMED_BURST,
                 interval: float = MALFORMED_INTERVAL, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._window_start = -float("inf")
        self._written = 0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, _ParserError):
            return self._malformed(record, exc)
        if exc is not None and not record.name.startswith(OWN_LOGGERS):
            # Its first line only: asyncio, for one, appends the exception's repr to the message.
            record.msg, record.args = record.getMessage().split("\n", 1)[0], ()
            record.exc_text = _traceback_without_message(record.exc_info)
            record.exc_info = None
        self._scrub(record)
        return True

    def _malformed(self, record: logging.LogRecord, exc: BaseException) -> bool:
        if logging.getLogger().getEffectiveLevel() > logging.WARNING:
            return False  # logged as a warning (below), which --log-level error leaves out
        with self._lock:
            now = self.clock()
            if now - self._window_start >= self.interval:
                self._window_start, self._written = now, 0
            if self._written >= self.burst:
                self._suppressed += 1
                return False
            self._written += 1
            left_out, self._suppressed = self._suppressed, 0
            last_of_window = self._written == self.burst
        record.msg = "malformed request refused: %s: %s"
        record.args = (type(exc).__name__, scrub(reason(exc), self.secrets))
        if left_out:
            record.msg += "; %d more since were not logged"
            record.args += (left_out,)
        if last_of_window:
            record.msg += "; more in the next %d s are counted, not logged"
            record.args += (int(self.interval),)
        record.exc_info = record.exc_text = record.stack_info = None
        # The client's mistake, not the server's: a warning, whatever level aiohttp chose.
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True

    def take_suppressed(self) -> int:
        with self._lock:
            left_out, self._suppressed = self._suppressed, 0
            return left_out

    def _scrub(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        clean = scrub(message, self.secrets)
        if clean != message or record.args:
            record.msg, record.args = clean, ()
        fields = getattr(record, "fields", None)
        if fields:
            record.fields = {k: scrub(v, self.secrets) if isinstance(v, str) else v for k, v in fields.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_info = None
        if record.exc_text:
            record.exc_text = scrub(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, self.secrets)


def _traceback_without_message(exc_info) -> str:
    exc_type, _, tb = exc_info
    frames = "".join(traceback.format_tb(tb))
    return f"Traceback (most recent call last):\n{frames}{exc_type.__name__} (message withheld from the log)"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["stack"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["stack"] = record.exc_text
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        fields = getattr(record, "fields", None)
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return text


def setup(level: str = "info", fmt: str = "text", stream=None, secrets: Iterable[str] = ()) -> Redactor:
    """One handler on the root logger, behind a :class:`Redactor` that knows ``secrets``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    redactor = Redactor(secrets)
    handler.addFilter(redactor)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # aiohttp's access log would write raw paths (with ids) for every request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return redactor


def flush() -> None:
    """Log how many malformed-request lines the current window left out (at shutdown)."""
    for handler in logging.getLogger().handlers:
        for f in handler.filters:
            if isinstance(f, Redactor) and (left_out := f.take_suppressed()):
                logging.getLogger("exporter").warning(
                    "%d malformed requests were refused without a log line (rate limited)", left_out)
