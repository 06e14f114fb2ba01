"""Error lookup and error groups (admin token): what support needs when a customer quotes an error id.

- ``GET /api/v1/errors/{error_id}``: the occurrence (redacted message and
  trace, route, tier, hashed user, time) and its group; 404 JSON if unknown.
- ``GET /api/v1/errors``: groups, filtered by tier, status, route and time
  window, most users affected first, then most occurrences.
- ``POST /api/v1/errors/groups/{fingerprint}/resolve``: the group becomes
  ``resolved``; its next occurrence makes it ``regressed``.

Records and groups live in the store (``exporter.store.errors``); they get
there through ``exporter.api.error_sink``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from exporter.api.errors import ApiError, invalid, iso
from exporter.catalog import TIERS
from exporter.store import errors as stored

if TYPE_CHECKING:
    from exporter.api.app import IngestApi

MAX_GROUPS = 500
ErrorId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Fingerprint = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]
_ERROR_ID, _FINGERPRINT = TypeAdapter(ErrorId), TypeAdapter(Fingerprint)


class ErrorGroupsQuery(BaseModel):
    """Query parameters of ``GET /api/v1/errors``."""

    model_config = ConfigDict(extra="forbid")
    tier: Literal[(*TIERS, "unknown")] | None = None  # type: ignore[valid-type]
    status: Literal[stored.STATUSES] | None = None  # type: ignore[valid-type]
    route: Annotated[str, StringConstraints(max_length=200, pattern=r"^/[^\s?#\x00-\x1f\x7f]*$")] | None = Field(
        None, description="route template, e.g. /api/v1/documents/{id}")
    since: datetime | None = Field(None, description="groups last seen at or after (ISO 8601, UTC if no offset)")
    until: datetime | None = Field(None, description="groups first seen before (ISO 8601, UTC if no offset)")
    limit: int = Field(50, ge=1, le=MAX_GROUPS)


class ErrorGroup(BaseModel):
    fingerprint: str = Field(description="hash of the exception type and its innermost frames (no line numbers)")
    error_type: str
    status: Literal[stored.STATUSES]  # type: ignore[valid-type]
    first_seen: str = Field(description="ISO 8601, UTC")
    last_seen: str = Field(description="ISO 8601, UTC")
    resolved_at: str | None = Field(description="when it was last resolved")
    count: int = Field(description="occurrences since first seen")
    users_affected: int = Field(description="distinct users among the retained records")
    tiers: list[str]
    routes: list[str] = Field(description="route templates, the most frequent first (at most 10)")
    message: str = Field(description="the latest occurrence's message, redacted")


class ErrorRecordOut(BaseModel):
    error_id: str
    fingerprint: str
    created_at: str = Field(description="ISO 8601, UTC")
    tier: str
    route: str
    error_type: str
    user_hash: str | None = Field(description="HMAC of the user id; null when unknown or opted out")
    message: str = Field(description="redacted: secrets, e-mail addresses, UUIDs, hex ids, long numbers")
    trace: str = Field(description="stack trace, redacted the same way, innermost frames kept (4 KB with message)")


class ErrorLookup(BaseModel):
    record: ErrorRecordOut
    group: ErrorGroup


class ErrorGroups(BaseModel):
    items: list[ErrorGroup]


def _group_out(group: dict[str, Any]) -> dict[str, Any]:
    return {**group, "first_seen": iso(group["first_seen"]), "last_seen": iso(group["last_seen"]),
            "resolved_at": iso(group["resolved_at"]) if group["resolved_at"] is not None else None}


def _path(request: web.Request, name: str, adapter: TypeAdapter) -> str:
    try:
        return adapter.validate_python(request.match_info[name])
    except ValidationError as exc:
        raise ApiError(400, "invalid_field", name, exc.errors(include_url=False)[0]["msg"]) from None


def _timestamp(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


async def get_error(api: IngestApi, request: web.Request) -> web.Response:
    api.auth.admin(request)
    error_id = _path(request, "error_id", _ERROR_ID)
    await api.errors.write()  # a record reported a moment ago is found
    found = await api.store.run(stored.lookup, error_id)
    if found is None:
        raise ApiError(404, "not_found", "error_id", "no error record with this id (unknown, or past retention)")
    record = {**found["record"], "created_at": iso(found["record"]["created_at"])}
    return web.json_response({"record": record, "group": _group_out(found["group"])})


async def list_errors(api: IngestApi, request: web.Request) -> web.Response:
    api.auth.admin(request)
    try:
        query = ErrorGroupsQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise invalid(exc) from None
    await api.errors.write()
    groups = await api.store.run(stored.list_groups, tier=query.tier, status=query.status, route=query.route,
                                 since=_timestamp(query.since), until=_timestamp(query.until), limit=query.limit)
    return web.json_response({"items": [_group_out(group) for group in groups]})


async def resolve(api: IngestApi, request: web.Request) -> web.Response:
    api.auth.admin(request)
    fingerprint = _path(request, "fingerprint", _FINGERPRINT)
    await api.errors.write()
    group = await api.store.run(stored.resolve_group, fingerprint, api.clock())
    if group is None:
        raise ApiError(404, "not_found", "fingerprint", "no error group with this fingerprint")
    await api.errors.refresh()
    return web.json_response(_group_out(group))


# --- OpenAPI (exporter.api.openapi) -------------------------------------------------------------

OPENAPI_MODELS = [(ErrorLookup, "serialization"), (ErrorGroups, "serialization")]


def openapi_paths(prefix: str, errors: Any, json: Any) -> dict[str, Any]:
    """The three operations; ``errors(*codes)`` and ``json(ref, description)`` build responses."""
    admin = [{"adminToken": []}]

    def path_param(name: str, adapter: TypeAdapter, description: str) -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True, "schema": adapter.json_schema(),
                "description": description}

    query = [{"name": name, "in": "query", "required": False, "schema": prop, "description": prop.get("description", "")}
             for name, prop in ErrorGroupsQuery.model_json_schema()["properties"].items()]
    return {
        f"{prefix}/errors": {"get": {
            "summary": "Error groups, most users affected first, then most occurrences",
            "operationId": "listErrorGroups", "security": admin, "parameters": query,
            "responses": {"200": json("ErrorGroups", "matching groups"), **errors(400, 401, 503)},
        }},
        f"{prefix}/errors/{{error_id}}": {"get": {
            "summary": "One error by the id of its 500 body: the redacted record and its group",
            "operationId": "getError", "security": admin,
            "parameters": [path_param("error_id", _ERROR_ID, "the error_id a customer quotes")],
            "responses": {"200": json("ErrorLookup", "the record and its group"), **errors(400, 401, 404, 503)},
        }},
        f"{prefix}/errors/groups/{{fingerprint}}/resolve": {"post": {
            "summary": "Mark an error group resolved (its next occurrence makes it regressed)",
            "operationId": "resolveErrorGroup", "security": admin,
            "parameters": [path_param("fingerprint", _FINGERPRINT, "the group's fingerprint")],
            "responses": {"200": json("ErrorGroup", "the group, resolved"), **errors(400, 401, 404, 503)},
        }},
    }
