"""Decoding a batch body: the valid items, and each invalid one as an error naming its field.

The envelope (``{"events": [...]}``) is checked first: a body that is not
one is refused as a whole (400). Items are then decoded one C pass for the
batch; where that fails, item by item, so valid items in the same batch are
kept and each rejected one is reported with its index, field and reason.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
import pydantic_core
from msgspec import Meta, Struct

from exporter.catalog import EVENT_TYPE
from exporter.ingest.schemas import EVENT_TYPES, ROUTE_REASON, Event, EventBase

FEEDBACK_EVENT_REASON = "feedback is submitted with POST /api/v1/feedback, not as an event"


class EventBatch(Struct, forbid_unknown_fields=True):
    """The body of ``POST /api/v1/events``."""

    events: Annotated[list[Event], Meta(description="events, each with its own type; at most max_batch_items")]


class _Envelope(Struct, forbid_unknown_fields=True):
    """``EventBatch`` with its items left undecoded: tells envelope errors from item errors."""

    events: list[Any]


class ItemError(Struct):
    index: Annotated[int, Meta(description="position of the rejected event in the batch")]
    type: Annotated[str, Meta(description="the event's type as recorded in clary_exporter_events_total")]
    field: Annotated[str, Meta(description="the offending field, dotted (e.g. usage.documents); 'type' for a bad type")]
    reason: str


class EventBatchResult(Struct):
    accepted: Annotated[int, Meta(description="events recorded")]
    rejected: Annotated[int, Meta(description="events refused (see errors); nothing of them was recorded")]
    duplicates: Annotated[int, Meta(description="events whose id was already accepted; skipped, not counted twice")]
    errors: list[ItemError]


# --- validation errors ------------------------------------------------------------------------------

class InvalidBatch(ValueError):
    """The body as a whole is unusable (400): ``field`` names where, ``reason`` says why."""

    def __init__(self, error: str, field: str, reason: str):
        super().__init__(reason)
        self.error = error
        self.field = field
        self.reason = reason


_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")
_NAMED = re.compile(r"field `([^`]+)`")


def error_location(exc: msgspec.ValidationError) -> tuple[str, list[str]]:
    """msgspec's message split into its reason and the path it points at.

    msgspec reports ``"Expected `int`, got `str` - at `$.events[3].code`"``;
    for a missing or unknown field the field is named in the reason instead,
    and becomes the path's last part.
    """
    match = _AT.match(str(exc))
    reason, path = match.group("reason"), match.group("path") or ""
    parts = [m.group(1) or m.group(2) or "..." for m in _PATH_PART.finditer(path)]
    named = _NAMED.search(reason)
    if named and ("missing required field" in reason or "unknown field" in reason):
        parts.append(named.group(1))
    return reason, parts


def _type_label(item: Any) -> str:
    raw = item.get("type") if isinstance(item, dict) else None
    return raw if isinstance(raw, str) and raw in EVENT_TYPE.values else "other"


def item_error(index: int, item: Any, exc: msgspec.ValidationError) -> ItemError:
    """One rejected item, from msgspec's error about it."""
    reason, parts = error_location(exc)
    if "..." in parts:
        parts = _name_dict_key(item, parts)
    kind = _type_label(item)
    tag = item.get("type") if isinstance(item, dict) else None
    if parts == ["type"] and isinstance(item, dict):
        reason = FEEDBACK_EVENT_REASON if tag == "feedback" else (
            f"unknown event type; expected one of: {', '.join(EVENT_TYPES)}" if "type" in item
            else "missing event type")
    elif parts == ["route"] and "matching regex" in reason:
        reason = ROUTE_REASON
    return ItemError(index=index, type=kind, field=".".join(parts) or "event", reason=reason)


def _name_dict_key(item: dict, parts: list[str]) -> list[str]:
    """``usage....`` as ``usage.documents``: msgspec does not say which key of a map failed.

    The event is validated again with the map cut down to one entry at a
    time; the first entry that fails on its own is the one. (Error path only.)
    """
    cut = parts.index("...")
    if cut != 1 or not isinstance(item, dict) or not isinstance(item.get(parts[0]), dict):
        return parts[:cut]
    for key, value in item[parts[0]].items():
        try:
            msgspec.convert({**item, parts[0]: {key: value}}, Event)
        except msgspec.ValidationError:
            return [parts[0], str(key), *parts[cut + 1:]]
    return parts[:cut]


_BATCH = msgspec.json.Decoder(EventBatch)


def decode_batch(body: bytes, max_items: int) -> tuple[list[EventBase], list[ItemError]]:
    """The valid events of a batch, in order, and an error (with its position) per invalid one.

    The common case, a batch without errors, is one msgspec pass. Otherwise
    the envelope is checked (``InvalidBatch`` for what makes the whole body
    unusable, ``TooManyEvents`` past ``max_items``) and each item validated
    on its own, so valid items are kept and every invalid one is named.
    """
    try:
        events = _BATCH.decode(body).events
    except msgspec.DecodeError:  # a ValidationError too; NaN is a DecodeError here
        pass
    else:
        if len(events) > max_items:
            raise TooManyEvents(len(events))
        return events, []
    items = _envelope(body)
    if len(items) > max_items:
        raise TooManyEvents(len(items))
    valid: list[EventBase] = []
    errors: list[ItemError] = []
    for index, item in enumerate(items):
        try:
            valid.append(msgspec.convert(item, Event))
        except msgspec.ValidationError as exc:
            errors.append(item_error(index, item, exc))
    return valid, errors


class TooManyEvents(ValueError):
    """More items than ``max_batch_items`` (413; nothing recorded)."""

    def __init__(self, count: int):
        super().__init__(count)
        self.count = count


def _envelope(body: bytes) -> list[Any]:
    """The batch's raw items, or ``InvalidBatch`` naming what is wrong with the body.

    Parsed leniently (NaN and Infinity are numbers here) so that such a value
    rejects its item, not the batch; a lone surrogate or broken JSON is a 400.
    """
    try:
        raw = pydantic_core.from_json(body)
    except ValueError as exc:
        raise InvalidBatch("malformed_json", "body", f"Invalid JSON: {exc}") from None
    try:
        return msgspec.convert(raw, _Envelope).events
    except msgspec.ValidationError as exc:
        reason, parts = error_location(exc)
        raise InvalidBatch("invalid_field", ".".join(parts) or "body", reason) from None


