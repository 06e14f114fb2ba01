"""Unhandled exceptions: an error id, one counted and redacted log record, a JSON 500 body.

The log record carries the error id, type, message and stack trace, the
route template, method and tier; never an API key, a user id or a raw path:
those are replaced by ``[redacted]`` wherever the exception repeats them.

An exception marked with :func:`expected` (a failure raised on purpose, like
the demo's ``/boom`` route) is counted under its own type and answered the
same way, but logged as one INFO line without a stack trace, marked
``deliberate``: a demo that fails on purpose should not look broken, and
every unmarked exception keeps its ERROR record with the stack.
"""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from typing import TypeVar

from exporter.catalog import METHODS as _METHODS
from exporter.catalog import TIER as _TIER_LABEL
from exporter.instrument.error_report import ErrorSink, error_record
from exporter.instrument.recorder import Recorder

INTERNAL_ERROR = "internal_error"
CONTACT_SUPPORT = "contact support with this error ID"
_EXPECTED = "_clary_expected_logger"
_E = TypeVar("_E", bound=BaseException)


def expected(exc: _E, logger: str = "exporter.instrument") -> _E:
    """Mark ``exc`` as raised on purpose: answered and counted as unhandled, logged as one line.

    An attribute on this one instance, not a class, so the ``error_type``
    label keeps the exception's own type (``RuntimeError``, not a marker
    class that would fold into ``other``). ``logger`` names the logger of the
    line (the raiser's, e.g. ``exporter.demo``): the record says who fails on
    purpose. Usage: ``raise expected(RuntimeError("..."), "exporter.demo")``.
    """
    setattr(exc, _EXPECTED, logger)
    return exc

# --- unhandled exceptions -----------------------------------------------------


REDACTED = "[redacted]"
_MIN_SECRET = 4  # shorter values (a path "/") would mangle every message


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def _exception_text(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))
    except Exception:  # pragma: no cover - a broken __str__
        return repr(exc)


def _redacted_exception(exc: BaseException, secrets: tuple[str, ...], depth: int = 0) -> BaseException:
    """A stand-in for ``exc`` (same type name, traceback and chain) whose messages are redacted."""
    cls = type(exc)
    stand_in_type = type(cls.__name__, (Exception,), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
    try:
        message = str(exc)
    except Exception:  # pragma: no cover - a broken __str__
        message = ""
    stand_in = stand_in_type(_redact(message, secrets))
    stand_in.__traceback__ = exc.__traceback__
    stand_in.__suppress_context__ = exc.__suppress_context__
    notes = getattr(exc, "__notes__", None)
    if notes:
        stand_in.__notes__ = [_redact(str(note), secrets) for note in notes]
    if depth < 8:
        if exc.__cause__ is not None:
            stand_in.__cause__ = _redacted_exception(exc.__cause__, secrets, depth + 1)
        if exc.__context__ is not None and exc.__context__ is not exc.__cause__:
            stand_in.__context__ = _redacted_exception(exc.__context__, secrets, depth + 1)
    return stand_in


def record_unhandled(
    recorder: Recorder,
    logger: logging.Logger,
    exc: BaseException,
    route: str,
    method: str,
    tier: str,
    secrets: tuple[str | None, ...] = (),
    reporter: ErrorSink | None = None,
    user: str | None = None,
) -> str:
    """Count an unhandled exception and log it once; returns its new error id.

    The log record carries the error id, exception type, message, stack trace,
    route template, method and tier: never an API key, user id or raw path.
    ``secrets`` (the request's API key, user id and raw path) are replaced by
    ``[redacted]`` wherever the exception's messages repeat them, as
    ``KeyError(api_key)`` would. With a ``reporter`` (``exporter.instrument.error_report``)
    an error record of ``user``'s request goes to it too, redacted the same way.
    """
    error_id = str(uuid.uuid4())
    error_type = type(exc).__name__
    recorder.error(tier, error_type, route)
    found = tuple(sorted({s for s in secrets if s and len(s) >= _MIN_SECRET}, key=len, reverse=True))
    logged: BaseException = exc
    if found and any(secret in _exception_text(exc) for secret in found):
        logged = _redacted_exception(exc, found)
    try:
        message = str(exc)
    except Exception:  # pragma: no cover - a broken __str__
        message = ""
    fields = {
        "error_id": error_id,
        "error_type": error_type,
        "error": _redact(message, found)[:500],
        "route": route,
        "method": method.upper() if method.upper() in _METHODS else "other",
        "tier": recorder.metrics.guard.value(_TIER_LABEL, tier),
    }
    if reporter is not None:
        try:
            reporter.report(error_record(exc, error_id, route, fields["tier"], user, secrets))
        except Exception:  # reporting never turns one failure into two
            logger.warning("error record not reported", exc_info=True)
    expected_by = getattr(exc, _EXPECTED, None)
    if isinstance(expected_by, str):
        logging.getLogger(expected_by).info("deliberate error (expected)",
                                            extra={"fields": {**fields, "deliberate": True}})
    else:
        logger.error("unhandled exception", exc_info=logged, extra={"fields": fields})
    return error_id


def error_body(error_id: str) -> dict[str, str]:
    """The JSON body of a 500 caused by an unhandled exception: the id a customer quotes to support."""
    return {"error": INTERNAL_ERROR, "error_id": error_id, "message": CONTACT_SUPPORT}


def error_body_bytes(error_id: str) -> bytes:
    return json.dumps(error_body(error_id)).encode()

