"""Refused requests: JSON ``{"error", "field", "message"}`` naming the offending field."""

from __future__ import annotations

from datetime import datetime, timezone

from aiohttp import web
from pydantic import ValidationError

from exporter.api.models import ErrorBody
from exporter.store.health import RETRY_SECONDS


class ApiError(web.HTTPException):
    """A refused request, raised by a handler: aiohttp sends it as the response (JSON naming the field).

    An ``HTTPException`` rather than a middleware catching a plain exception:
    no middleware frame on every request of the hot ingestion path.
    """

    def __init__(self, status: int, error: str, field: str, message: str, headers: dict | None = None):
        self.status_code = status
        super().__init__(headers=headers, content_type="application/json",
                         text=ErrorBody(error=error, field=field, message=message).model_dump_json())
        self.error = error
        self.field = field
        self.message = message


def storage_unavailable(what: str = "nothing was stored or changed") -> ApiError:
    """503 for a store that is down (disk full, read-only, locked): the client may retry the same request.

    ``exporter.store.health`` logs the cause once; the answer does not carry
    it (a path and a disk's state are the operator's business).
    """
    return ApiError(503, "storage_unavailable", "storage", f"the exporter's storage is unavailable: {what}; "
                    "retry later", headers={"Retry-After": str(int(RETRY_SECONDS))})


def invalid(exc: ValidationError) -> ApiError:
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    if first["type"] == "json_invalid":
        return ApiError(400, "malformed_json", "body", first["msg"])
    return ApiError(400, "invalid_field", field, first["msg"])


def epoch(moment: datetime) -> float:
    """Unix seconds of a query's datetime; one without an offset is UTC."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

