"""Typed ingestion events: one msgspec schema per event type, each mapped
onto the recording API.

``POST /api/v1/events`` takes ``{"events": [...]}``; every item is one of
the structs below, told apart by its ``type`` (a tagged union). The same
structs generate the OpenAPI document (``exporter.api.app``) and are what
``exporter.instrument.client`` sends, so the schema, the docs and the recording never
drift apart. msgspec, not pydantic, because a batch is decoded and
validated in one C pass, faster than ``json.loads`` alone: ingestion keeps
up with a bare JSON endpoint (benchmarks/ingest_throughput.py).

Label values still pass the catalog's label guard when they are recorded:
a schema bounds lengths and types, the guard bounds cardinality. Strings
that can only become allow-listed label values (``doc_type``, ``model``...)
need no character checks here: anything off the list counts as ``other``.
The one open-ended label, ``route``, is held to a template's characters.

Event ``type`` values are the catalog's ``EVENT_TYPE`` label values, less
``feedback``, which has its own durable endpoint (``POST /api/v1/feedback``).
"""

from __future__ import annotations

import logging
import re
import threading
from itertools import chain, repeat
from collections.abc import Callable, Iterable
from typing import Annotated, Any, ClassVar, Literal, Protocol, Union

import msgspec
import pydantic_core
from msgspec import Meta, Struct

from exporter.catalog import EVENT_TYPE, METHODS
from exporter.instrument.deferred import count_elements, group_values
from exporter.labels import LabelRejected
from exporter.instrument.recorder import Recorder

log = logging.getLogger(__name__)

DAY = 86400.0
MAX_SECONDS = 7 * DAY
MAX_ID_LENGTH = 128

Name = Annotated[str, Meta(min_length=1, max_length=64)]
Secret = Annotated[str, Meta(min_length=1, max_length=256)]
# A route template such as /api/v1/documents/{id}: never a raw path with ids or a query.
# (?!\n) because Python's "$" also matches before a trailing newline.
ROUTE_PATTERN = r"^/[^\s?#\x00-\x1f\x7f]*(?!\n)$"
ROUTE_REASON = ("expected a route template such as /api/v1/documents/{id}: a leading /, no query string, "
                "no whitespace or control characters")
Route = Annotated[str, Meta(min_length=1, max_length=200, pattern=ROUTE_PATTERN,
                            description="route template, e.g. /api/v1/documents/{id}; never the raw path")]
Seconds = Annotated[float, Meta(ge=0, le=MAX_SECONDS, description="seconds")]
Tier = Literal["lite", "standard", "professional", "unknown"]
Outcome = Literal["success", "failure"]
Count = Annotated[int, Meta(ge=0, le=10**12)]
Gauge = Annotated[float, Meta(ge=0, le=1e15)]
Hashed = Meta(description="hashed (HMAC) on arrival; never stored or exposed")
UserId = Annotated[str, Meta(min_length=1, max_length=256,
                             description="hashed (HMAC) on arrival; ignored for opted-out users")]




class UserTracking(Protocol):
    """Where per-user activity goes; answers whether the user may be tracked."""

    def track(self, tier: str, user_id: str, kind: str, count: int = 1) -> bool: ...

    def track_all(self, counts: dict[tuple[str, str, str], int]) -> list[tuple[str, str]]:
        """``track`` for each (tier, user id, kind) and its count; the (tier, user id) of those kept."""
        ...


class _TrackEveryone:
    def track(self, tier: str, user_id: str, kind: str, count: int = 1) -> bool:
        return True

    def track_all(self, counts: dict[tuple[str, str, str], int]) -> list[tuple[str, str]]:
        return [(tier, user_id) for tier, user_id, _ in counts]


TRACK_EVERYONE: UserTracking = _TrackEveryone()


class _Event(Struct, tag_field="type", forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True,
             gc=False):
    """Fields every event has. ``type`` (the tag) is set per subclass.

    ``gc=False``: events hold strings, numbers and flat containers of them, so
    they cannot form reference cycles; untracked, a batch of them adds no
    work to the cyclic garbage collector.
    """

    id: Annotated[str, Meta(
        min_length=1, max_length=MAX_ID_LENGTH,
        description="Optional unique id (a UUID); a retried batch does not count an event with a seen id twice.",
    )] | None = None

    type: ClassVar[str]

    def apply(self, rec: Recorder, users: UserTracking) -> None:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    @classmethod
    def record_all(cls, events: list, rec: Recorder, users: UserTracking) -> None:  # pragma: no cover
        """Record events of this type in bulk: the same as ``apply`` on each, in order.

        ``rec`` is a recorder batch (gauges are set at its commit, last value
        per series); each series is updated once. Labels and values are
        gathered with comprehensions: Python 3.11 specialises their attribute
        reads on structs, which made them ~40 % cheaper than ``attrgetter``.
        """
        raise NotImplementedError


class DocumentProcessed(_Event, tag="document_processed", kw_only=True):
    """A document finished processing; its features count as used with the same outcome."""

    tier: Tier
    doc_type: Name
    outcome: Outcome = "success"
    duration_seconds: Seconds | None = None
    features: Annotated[list[Name], Meta(max_length=32)] = []

    def apply(self, rec, users):
        rec.document_processed(self.tier, self.doc_type, self.outcome, self.duration_seconds, self.features)

    @classmethod
    def record_all(cls, events, rec, users):
        rec.count_each("clary_documents_processed_total", [(e.tier, e.doc_type, e.outcome) for e in events])
        rec.observe_each("clary_document_processing_duration_seconds", [(e.tier, e.doc_type) for e in events],
                         [e.duration_seconds for e in events])
        featured = [e for e in events if e.features]
        if featured:
            rec.observe_each("clary_features_per_document", [(e.tier,) for e in featured],
                             [len(e.features) for e in featured])
            # Documents counted per (tier, features, outcome) first, then each feature of each: the same
            # series in the same order as feature by feature, with the per-feature work per distinct list.
            documents: dict[tuple, int] = {}
            count_elements(documents, [(e.tier, tuple(e.features), e.outcome) for e in featured])
            uses, amounts = [], []
            for (tier, features, outcome), count in documents.items():
                for feature in features:
                    uses.append((tier, feature, outcome))
                    amounts.append(count)
            rec.add_each("clary_feature_uses_total", uses, amounts)


class FeatureUsed(_Event, tag="feature_used", kw_only=True):
    """A feature ran, successfully or not."""

    tier: Tier
    feature: Name
    outcome: Outcome = "success"

    def apply(self, rec, users):
        rec.feature_used(self.tier, self.feature, self.outcome)

    @classmethod
    def record_all(cls, events, rec, users):
        rec.count_each("clary_feature_uses_total", [(e.tier, e.feature, e.outcome) for e in events])


class FeatureBlocked(_Event, tag="feature_blocked", kw_only=True):
    """A feature refused because the caller's tier lacks it (upgrade potential)."""

    tier: Tier
    feature: Name

    def apply(self, rec, users):
        rec.feature_blocked(self.tier, self.feature)

    @classmethod
    def record_all(cls, events, rec, users):
        rec.count_each("clary_feature_blocked_total", [(e.tier, e.feature) for e in events])


class QuotaExceeded(_Event, tag="quota_exceeded", kw_only=True):
    """A request refused because the tier's limit ran out."""

    tier: Tier
    limit: Annotated[str, Meta(min_length=1, max_length=64, description="documents, features or api_calls")]

    def apply(self, rec, users):
        rec.quota_exceeded(self.tier, self.limit)

    @classmethod
    def record_all(cls, events, rec, users):
        rec.count_each("clary_quota_exceeded_total", [(e.tier, e.limit) for e in events])


class TemplateUsed(_Event, tag="template_used", kw_only=True):
    """An extraction template was used."""

    tier: Tier
    kind: Literal["builtin", "custom"]

    def apply(self, rec, users):
        rec.template_used(self.tier, self.kind)

    @classmethod
    def record_all(cls, events, rec, users):
        rec.count_each("clary_template_uses_total", [(e.tier, e.kind) for e in events])


class ApiCall(_Event, tag="api_call", kw_only=True):
    """One API request served by a component that is not instrumented in-process."""

    tier: Tier
    method: Literal[METHODS]  # type: ignore[valid-type]
    route: Route
    code: Annotated[int, Meta(ge=100, le=599)]
    duration_seconds: Seconds

    def apply(self, rec, users):
        rec.http_request(self.tier, self.method, self.route, self.code, self.duration_seconds)

    @classmethod
    def record_all(cls, events, rec, users):
        rec.count_each("clary_http_requests_total", [(e.tier, e.method, e.route, e.code) for e in events])
        rec.observe_each("clary_http_request_duration_seconds", [(e.tier, e.method, e.route) for e in events],
                         [e.duration_seconds for e in events])


class Inference(_Event, tag="inference", kw_only=True):
    """One model inference."""

    tier: Tier
    model: Name
    outcome: Outcome = "success"
    duration_seconds: Seconds

    def apply(self, rec, users):
        rec.inference(self.tier, self.model, self.outcome, self.duration_seconds)

    @classmethod
    def record_all(cls, events, rec, users):
        rec.count_each("clary_inference_requests_total", [(e.tier, e.model, e.outcome) for e in events])
        rec.observe_each("clary_inference_duration_seconds", [(e.tier, e.model) for e in events],
                         [e.duration_seconds for e in events])


class ModelLoad(_Event, tag="model_load", kw_only=True):
    """A model finished loading."""

    model: Name
    duration_seconds: Seconds
    memory_bytes: Gauge | None = None

    def apply(self, rec, users):
        rec.model_loaded(self.model, self.duration_seconds, self.memory_bytes)

    @classmethod
    def record_all(cls, events, rec, users):
        models = [(e.model,) for e in events]
        rec.observe_each("clary_model_load_duration_seconds", models, [e.duration_seconds for e in events])
        rec.set_each("clary_model_memory_bytes", models, [e.memory_bytes for e in events])


class QueueLength(_Event, tag="queue_length", kw_only=True):
    """Jobs currently waiting in a queue."""

    queue: Name
    length: Gauge

    def apply(self, rec, users):
        rec.queue_length(self.queue, self.length)

    @classmethod
    def record_all(cls, events, rec, users):
        rec.set_each("clary_queue_length", [(e.queue,) for e in events], [e.length for e in events])


class LlmCall(_Event, tag="llm_call", kw_only=True):
    """One cloud-LLM call."""

    tier: Tier
    provider: Name
    model: Name
    outcome: Outcome = "success"
    duration_seconds: Seconds
    time_to_first_token_seconds: Seconds | None = None
    input_tokens: Count = 0
    output_tokens: Count = 0

    def apply(self, rec, users):
        rec.llm_call(self.tier, self.provider, self.model, self.outcome, self.duration_seconds,
                     self.time_to_first_token_seconds, self.input_tokens, self.output_tokens)

    @classmethod
    def record_all(cls, events, rec, users):
        rec.count_each("clary_llm_requests_total", [(e.tier, e.provider, e.model, e.outcome) for e in events])
        by_model = [(e.provider, e.model) for e in events]
        rec.observe_each("clary_llm_request_duration_seconds", by_model, [e.duration_seconds for e in events])
        rec.observe_each("clary_llm_time_to_first_token_seconds", by_model,
                         [e.time_to_first_token_seconds for e in events])
        by_call = [(e.tier, e.provider, e.model) for e in events]
        for direction, tokens in (("input", [e.input_tokens for e in events]),
                                  ("output", [e.output_tokens for e in events])):
            sums = {key: sum(amounts) for key, amounts in group_values(by_call, tokens, bool).items()}
            rec.add_each("clary_llm_tokens_total", [(*key, direction) for key in sums], sums.values())


class LicenseValidation(_Event, tag="license_validation", kw_only=True):
    """A license check and its result."""

    tier: Tier
    result: Literal["valid", "invalid", "expired", "revoked", "error"]
    duration_seconds: Seconds | None = None
    license_key: Annotated[Secret, Hashed] | None = None

    def apply(self, rec, users):
        rec.license_validation(self.tier, self.result, self.duration_seconds, self.license_key)

    @classmethod
    def record_all(cls, events, rec, users):
        rec.count_each("clary_license_validations_total", [(e.tier, e.result) for e in events])
        rec.observe_each("clary_license_validation_duration_seconds", repeat((), len(events)),
                         [e.duration_seconds for e in events])
        for tier, license_key in {(event.tier, event.license_key) for event in events if event.license_key}:
            rec.license_active(tier, license_key)


class LicenseStatus(_Event, tag="license_status", kw_only=True):
    """Expiry and usage against limits of one license (compliance = usage / limit)."""

    tier: Tier
    license_key: Annotated[Secret, Hashed]
    expires_at: Annotated[float, Meta(ge=0, le=1e11, description="unix time")] | None = None
    usage: Annotated[dict[Name, Gauge], Meta(max_length=8, description="limit name -> current usage")] = {}
    limits: Annotated[dict[Name, Gauge], Meta(max_length=8, description="limit name -> limit")] = {}

    def apply(self, rec, users):
        rec.license_status(self.tier, self.license_key, self.expires_at, self.usage, self.limits)

    @classmethod
    def record_all(cls, events, rec, users):
        # The batch sets each gauge series once, to its last value, even where licenses past
        # the series budget share the series license="other". An event that a later one of the
        # same shape (license, tier, fields set) overrides series by series is skipped; the
        # first event of each shape still goes first, so series are admitted in arrival order.
        shapes = [(e.tier, e.license_key, e.expires_at is None, tuple(e.usage), tuple(e.limits)) for e in events]
        last = dict(zip(shapes, range(len(events))))  # shape -> its last event, in order of its first
        recorded: Iterable[int] = range(len(events))
        if len(last) < len(events):  # the last of each shape, in order of its first, then in order of position
            recorded = [*last.values(), *sorted(last.values())]
        for index in recorded:
            e = events[index]
            rec.license_status(e.tier, e.license_key, e.expires_at, e.usage, e.limits)


class UserAction(_Event, tag="user_action", kw_only=True):
    """A user did something (login, upload...)."""

    tier: Tier
    action: Name
    user_id: UserId | None = None

    def apply(self, rec, users):
        user = self.user_id if self.user_id and users.track(self.tier, self.user_id, self.action) else None
        rec.user_action(self.tier, self.action, user)

    @classmethod
    def record_all(cls, events, rec, users):
        _track_users(rec, users, [(e.tier, e.user_id, e.action) for e in events if e.user_id])
        rec.count_each("clary_user_actions_total", [(e.tier, e.action) for e in events])


class Session(_Event, tag="session", kw_only=True):
    """A finished user session."""

    tier: Tier
    duration_seconds: Seconds
    user_id: UserId | None = None

    def apply(self, rec, users):
        rec.session_ended(self.tier, self.duration_seconds)
        if self.user_id and users.track(self.tier, self.user_id, "session"):
            rec.user_seen(self.tier, self.user_id)

    @classmethod
    def record_all(cls, events, rec, users):
        _track_users(rec, users, [(e.tier, e.user_id, "session") for e in events if e.user_id])
        rec.observe_each("clary_session_duration_seconds", [(e.tier,) for e in events],
                         [e.duration_seconds for e in events])


def _track_users(rec: Recorder, users: UserTracking, activity: Iterable[tuple[str, str, str]]) -> None:
    """Per-user state for (tier, user id, kind) triples: each distinct one tracked once, with its count."""
    counts: dict[tuple[str, str, str], int] = {}
    count_elements(counts, activity)
    rec.users_seen(users.track_all(counts))


EVENT_MODELS: tuple[type[_Event], ...] = (
    DocumentProcessed, FeatureUsed, FeatureBlocked, QuotaExceeded, TemplateUsed, ApiCall, Inference,
    ModelLoad, QueueLength, LlmCall, LicenseValidation, LicenseStatus, UserAction, Session,
)
for _model in EVENT_MODELS:
    _model.type = _model.__struct_config__.tag  # event.type, as recorded in clary_exporter_events_total
EVENT_TYPES: tuple[str, ...] = tuple(m.type for m in EVENT_MODELS)
Event = Union[EVENT_MODELS]  # type: ignore[valid-type]
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


def decode_batch(body: bytes, max_items: int) -> tuple[list[_Event], list[ItemError]]:
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
    valid: list[_Event] = []
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


class DedupeWindow:
    """Ids of recently accepted events, in bounded memory.

    Two generations of id sets: new ids go into the current one; when it
    holds ``max_ids / 2`` ids, or is ``ttl / 2`` seconds old (checked by
    ``tick``, once per batch), it becomes the previous generation and the
    old previous one is forgotten. So an accepted id is remembered for at
    least the next ``max_ids / 2`` ids or ``ttl / 2`` seconds, whichever
    comes first, and memory never holds more than ``max_ids`` ids, whatever
    the traffic. A retried batch arrives within seconds: well inside.
    Membership and insertion are set operations (no per-id bookkeeping),
    because this runs for every event.
    """

    def __init__(self, max_ids: int = 100_000, ttl: float = 3600.0, clock: Callable[[], float] | None = None):
        import time

        self.max_ids = max_ids
        self.ttl = ttl
        self._clock = clock or time.monotonic
        self._half = max(1, max_ids // 2)
        self._current: set[str] = set()
        self._previous: set[str] = set()
        self._since = self._clock()

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._current or event_id in self._previous

    def admit(self, events: list[_Event]) -> tuple[list[_Event], int]:
        """The events whose id is new or absent (their ids remembered from now on), and how many were not.

        A batch in one call, in C set operations when every id is new.
        """
        current, previous = self._current, self._previous
        ids = [event.id for event in events]  # a list, not a set: building a set of them cost more than the checks
        if previous.isdisjoint(ids) and current.isdisjoint(ids):
            # The usual batch: all new ids. Added at once; kept if they were distinct, none was None
            # and the generation did not pass its size (one by one would have rotated inside the batch).
            size = len(current)
            current.update(ids)
            if len(current) - size == len(ids) and len(current) <= self._half and None not in current:
                if len(current) == self._half:
                    self._rotate()
                return events, 0
            current.difference_update(ids)  # undone: none of them was in it before
        fresh: list[_Event] = []
        duplicates = 0
        for event in events:  # otherwise id by id, as add() rotates
            event_id = event.id
            if event_id is not None:
                if event_id in self:
                    duplicates += 1
                    continue
                self.add(event_id)
            fresh.append(event)
        return fresh, duplicates

    def add(self, event_id: str) -> None:
        current = self._current
        current.add(event_id)
        if len(current) >= self._half:
            self._rotate()

    def tick(self) -> None:
        """Rotate by age; called once per batch rather than per id."""
        if self._clock() - self._since >= self.ttl / 2:
            self._rotate()
            if self._clock() - self._since >= self.ttl / 2:  # pragma: no cover - clock jumped
                self._rotate()

    def _rotate(self) -> None:
        self._previous = self._current
        self._current = set()
        self._since = self._clock()


# Accepted events held back before they are recorded in bulk: enough that recording costs
# little per event, few enough that the events are still in the CPU's cache when it runs
# (measured: 2,048 records a batch of 100 in ~20 % less time than 4,096; 512 costs more again).
FOLD_AT = 2048


def by_type(events: Iterable[_Event]) -> dict[type[_Event], list[_Event]]:
    """Events grouped by type, each group in arrival order."""
    grouped: dict[type[_Event], list[_Event]] = {}
    for event in events:
        try:
            grouped[type(event)].append(event)
        except KeyError:
            grouped[type(event)] = [event]
    return grouped


def record_events(events: Iterable[_Event], rec: Recorder, users: UserTracking) -> None:
    """Record accepted events in bulk per type, and count them accepted, through one recorder batch."""
    batch = rec.batch()
    for event_type, group in by_type(events).items():
        try:
            event_type.record_all(group, batch, users)
        except LabelRejected as exc:  # pragma: no cover - the schemas admit no value the guard rejects
            log.error("%d %s events not recorded: %s", len(group), event_type.type, exc)
            continue
        batch.event(event_type.type, "accepted", len(group))
    batch.commit()


class EventBacklog:
    """Accepted events waiting to be recorded in bulk.

    Recording costs mostly per call rather than per event: ``record_all``
    over thousands of events of one type costs a fraction of what it costs
    over the handful one request carries. So accepted events queue here and
    are recorded, all of them, once ``fold_at`` have accumulated, or before
    anything that must see them: before any catalog family is collected (a
    scrape includes every event accepted before it), before a direct gauge
    ``set`` (which must win over older ingested values), and before
    whatever changes per-user state (opt-out, opt-in, deletion, the activity
    flush: ``IngestApi`` calls :meth:`fold`). Where the recorder cannot run
    code before a scrape (multiprocess mode) events are recorded at once.
    """

    def __init__(self, recorder: Recorder, users: UserTracking, fold_at: int = FOLD_AT):
        self._recorder = recorder
        self._users = users
        self.fold_at = fold_at
        self._lock = threading.Lock()  # the queue
        self._folding = threading.RLock()  # held from taking the queue until it is recorded
        self._in_progress = 0  # folds holding _folding
        self._pending: list[list[_Event]] = []
        self._count = 0
        self.deferring = recorder.before_collect(self.fold)

    def __len__(self) -> int:
        return self._count

    def add(self, events: list[_Event]) -> None:
        """Take accepted events, in arrival order (the list becomes the backlog's)."""
        if not self.deferring:
            record_events(events, self._recorder, self._users)
            return
        with self._lock:
            self._pending.append(events)
            self._count += len(events)
            due = self._count >= self.fold_at
        if due:
            self.fold()

    def fold(self) -> None:
        """Record everything queued (thread-safe; a few attribute reads when nothing is).

        Returns only once everything queued before the call is recorded, even
        when another thread is recording it: a scrape waits for a fold in
        progress rather than miss what it records.
        """
        if not self._count and not self._in_progress:
            return
        with self._folding:
            self._in_progress += 1
            try:
                with self._lock:
                    pending, self._pending, self._count = self._pending, [], 0
                if pending:
                    record_events(chain.from_iterable(pending), self._recorder, self._users)
            finally:
                self._in_progress -= 1
