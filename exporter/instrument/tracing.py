"""Trace ids for exemplars: the W3C ``traceparent`` header, else the active OpenTelemetry span."""

from __future__ import annotations

import re

from exporter.instrument import _compat

TRACEPARENT_HEADER = "traceparent"
_otel_trace = _compat.otel_trace

# --- trace ids for exemplars -------------------------------------------------

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_PARENT = "0" * 16


def parse_traceparent(value: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` header, or None when it is invalid.

    Follows W3C Trace Context: version ``ff`` and all-zero ids are invalid;
    version ``00`` has exactly four fields, later versions may append more.
    """
    if not value or len(value) > 512:
        return None
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_id, parent_id, rest = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_PARENT:
        return None
    if version == "00" and rest:
        return None
    return trace_id


def otel_module():
    """``opentelemetry.trace`` when installed, else None."""
    return _otel_trace


def otel_trace_id() -> str | None:
    """The trace id of the active OpenTelemetry span, when opentelemetry is installed."""
    if _otel_trace is None:
        return None
    context = _otel_trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def trace_id(traceparent: str | None) -> str | None:
    """The request's trace id: the ``traceparent`` header's, else the active span's.

    An OpenTelemetry server span continues the header's trace, so both agree
    when both exist; the header is checked first because it is cheaper.
    """
    if traceparent:
        found = parse_traceparent(traceparent)
        if found is not None:
            return found
    return otel_trace_id()

