"""Typed ingestion events: one pydantic schema per event type, each mapped
onto the recording API.

``POST /api/v1/events`` takes ``{"events": [...]}``; every item is one of
the models below, told apart by its ``type`` (a discriminated union). The
same models generate the OpenAPI document (``exporter.api``) and are what
``exporter.client`` sends, so the schema, the docs and the recording never
drift apart. Label values still pass the catalog's label guard when they
are recorded: a schema bounds lengths and types, the guard bounds
cardinality.

Event ``type`` values are the catalog's ``EVENT_TYPE`` label values, less
``feedback``, which has its own durable endpoint (``POST /api/v1/feedback``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, Protocol, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from exporter.catalog import EVENT_TYPE, METHODS
from exporter.recorder import Recorder

DAY = 86400.0
MAX_SECONDS = 7 * DAY
MAX_ID_LENGTH = 128

# Strings that may become label values: no control characters (they would
# corrupt the exposition), short. The guard maps out-of-list values to ``other``.
_NO_CONTROL = r"^[^\x00-\x1f\x7f]+$"
Name = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_NO_CONTROL)]
UserId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=_NO_CONTROL)]
LicenseKey = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=_NO_CONTROL)]
# A route template such as /api/v1/documents/{id}: never a raw path with ids or a query.
Route = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^/[^\s?#\x00-\x1f\x7f]*$")]
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, description="seconds")]
Tier = Literal["lite", "standard", "professional", "unknown"]
Outcome = Literal["success", "failure"]
Count = Annotated[int, Field(ge=0, le=10**12)]
Gauge = Annotated[float, Field(ge=0, le=1e15)]


class UserTracking(Protocol):
    """Where per-user activity goes; answers whether the user may be tracked."""

    def track(self, tier: str, user_id: str, kind: str) -> bool: ...


class _TrackEveryone:
    def track(self, tier: str, user_id: str, kind: str) -> bool:
        return True


TRACK_EVERYONE: UserTracking = _TrackEveryone()


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    id: str | None = Field(
        None, min_length=1, max_length=MAX_ID_LENGTH,
        description="Optional unique id (a UUID); a retried batch does not count an event with a seen id twice.",
    )

    def apply(self, rec: Recorder, users: UserTracking) -> None:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


class DocumentProcessed(_Event):
    """A document finished processing; its features count as used with the same outcome."""

    type: Literal["document_processed"]
    tier: Tier
    doc_type: Name
    outcome: Outcome = "success"
    duration_seconds: Seconds | None = None
    features: list[Name] = Field(default_factory=list, max_length=32)

    def apply(self, rec, users):
        rec.document_processed(self.tier, self.doc_type, self.outcome, self.duration_seconds, self.features)


class FeatureUsed(_Event):
    type: Literal["feature_used"]
    tier: Tier
    feature: Name
    outcome: Outcome = "success"

    def apply(self, rec, users):
        rec.feature_used(self.tier, self.feature, self.outcome)


class FeatureBlocked(_Event):
    """A feature refused because the caller's tier lacks it (upgrade potential)."""

    type: Literal["feature_blocked"]
    tier: Tier
    feature: Name

    def apply(self, rec, users):
        rec.feature_blocked(self.tier, self.feature)


class QuotaExceeded(_Event):
    type: Literal["quota_exceeded"]
    tier: Tier
    limit: Name = Field(description="documents, features or api_calls")

    def apply(self, rec, users):
        rec.quota_exceeded(self.tier, self.limit)


class TemplateUsed(_Event):
    type: Literal["template_used"]
    tier: Tier
    kind: Literal["builtin", "custom"]

    def apply(self, rec, users):
        rec.template_used(self.tier, self.kind)


class ApiCall(_Event):
    """One API request served by a component that is not instrumented in-process."""

    type: Literal["api_call"]
    tier: Tier
    method: Literal[METHODS]  # type: ignore[valid-type]
    route: Route = Field(description="route template, e.g. /api/v1/documents/{id}; never the raw path")
    code: int = Field(ge=100, le=599)
    duration_seconds: Seconds

    def apply(self, rec, users):
        rec.http_request(self.tier, self.method, self.route, self.code, self.duration_seconds)


class Inference(_Event):
    type: Literal["inference"]
    tier: Tier
    model: Name
    outcome: Outcome = "success"
    duration_seconds: Seconds

    def apply(self, rec, users):
        rec.inference(self.tier, self.model, self.outcome, self.duration_seconds)


class ModelLoad(_Event):
    type: Literal["model_load"]
    model: Name
    duration_seconds: Seconds
    memory_bytes: Gauge | None = None

    def apply(self, rec, users):
        rec.model_loaded(self.model, self.duration_seconds, self.memory_bytes)


class QueueLength(_Event):
    type: Literal["queue_length"]
    queue: Name
    length: Gauge

    def apply(self, rec, users):
        rec.queue_length(self.queue, self.length)


class LlmCall(_Event):
    type: Literal["llm_call"]
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


class LicenseValidation(_Event):
    type: Literal["license_validation"]
    tier: Tier
    result: Literal["valid", "invalid", "expired", "revoked", "error"]
    duration_seconds: Seconds | None = None
    license_key: LicenseKey | None = Field(None, description="hashed (HMAC) on arrival; never stored or exposed")

    def apply(self, rec, users):
        rec.license_validation(self.tier, self.result, self.duration_seconds, self.license_key)


class LicenseStatus(_Event):
    """Expiry and usage against limits of one license (compliance = usage / limit)."""

    type: Literal["license_status"]
    tier: Tier
    license_key: LicenseKey = Field(description="hashed (HMAC) on arrival; never stored or exposed")
    expires_at: float | None = Field(None, ge=0, le=1e11, description="unix time")
    usage: dict[Name, Gauge] = Field(default_factory=dict, max_length=8, description="limit name -> current usage")
    limits: dict[Name, Gauge] = Field(default_factory=dict, max_length=8, description="limit name -> limit")

    def apply(self, rec, users):
        rec.license_status(self.tier, self.license_key, self.expires_at, self.usage, self.limits)


class UserAction(_Event):
    type: Literal["user_action"]
    tier: Tier
    action: Name
    user_id: UserId | None = Field(None, description="hashed (HMAC) on arrival; ignored for opted-out users")

    def apply(self, rec, users):
        user = self.user_id if self.user_id and users.track(self.tier, self.user_id, self.action) else None
        rec.user_action(self.tier, self.action, user)


class Session(_Event):
    """A finished user session."""

    type: Literal["session"]
    tier: Tier
    duration_seconds: Seconds
    user_id: UserId | None = Field(None, description="hashed (HMAC) on arrival; ignored for opted-out users")

    def apply(self, rec, users):
        rec.session_ended(self.tier, self.duration_seconds)
        if self.user_id and users.track(self.tier, self.user_id, "session"):
            rec.user_seen(self.tier, self.user_id)


EVENT_MODELS: tuple[type[_Event], ...] = (
    DocumentProcessed, FeatureUsed, FeatureBlocked, QuotaExceeded, TemplateUsed, ApiCall, Inference,
    ModelLoad, QueueLength, LlmCall, LicenseValidation, LicenseStatus, UserAction, Session,
)
Event = Annotated[Union[EVENT_MODELS], Field(discriminator="type")]  # type: ignore[valid-type]
EVENT_TYPES: tuple[str, ...] = tuple(m.model_fields["type"].annotation.__args__[0] for m in EVENT_MODELS)
ITEM = TypeAdapter(Event)
FEEDBACK_EVENT_REASON = "feedback is submitted with POST /api/v1/feedback, not as an event"


class EventBatch(BaseModel):
    """The body of ``POST /api/v1/events``."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    events: list[Event] = Field(description="events, each with its own type; at most max_batch_items")


class ItemError(BaseModel):
    index: int = Field(description="position of the rejected event in the batch")
    type: str = Field(description="the event's type as recorded in clary_exporter_events_total")
    field: str = Field(description="the offending field, dotted (e.g. usage.documents); 'type' for a bad type")
    reason: str


class EventBatchResult(BaseModel):
    accepted: int = Field(description="events recorded")
    rejected: int = Field(description="events refused (see errors); nothing of them was recorded")
    duplicates: int = Field(description="events whose id was already accepted; skipped, not counted twice")
    errors: list[ItemError]


def _type_label(item: Any) -> str:
    raw = item.get("type") if isinstance(item, dict) else None
    return raw if isinstance(raw, str) and raw in EVENT_TYPE.values else "other"


def item_error(index: int, item: Any, error: dict) -> ItemError:
    """One rejected item from the first pydantic error about it."""
    loc = list(error["loc"])
    kind = error["type"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        field = "type"
        tag = item.get("type") if isinstance(item, dict) else None
        reason = FEEDBACK_EVENT_REASON if tag == "feedback" else (
            f"unknown event type; expected one of: {', '.join(EVENT_TYPES)}"
            if kind == "union_tag_invalid" else "missing event type")
    else:
        if loc and isinstance(item, dict) and loc[0] == item.get("type"):
            loc = loc[1:]  # the discriminated union's tag
        field = ".".join(str(part) for part in loc) or "event"
        reason = error["msg"]
    return ItemError(index=index, type=_type_label(item), field=field, reason=reason)


def validate_items(items: list[Any]) -> tuple[list[tuple[int, _Event]], list[ItemError]]:
    """Validate items one by one: the valid ones and an error per invalid one."""
    valid: list[tuple[int, _Event]] = []
    errors: list[ItemError] = []
    for index, item in enumerate(items):
        try:
            valid.append((index, ITEM.validate_python(item)))
        except ValidationError as exc:
            errors.append(item_error(index, item, exc.errors(include_url=False)[0]))
    return valid, errors


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
