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
from collections.abc import Iterable
from itertools import repeat
from typing import Annotated, ClassVar, Literal, Protocol, Union

from msgspec import Meta, Struct

from exporter.catalog import METHODS
from exporter.instrument._compat import count_elements
from exporter.instrument.deferred import group_values
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
SessionId = Annotated[str, Meta(min_length=1, max_length=128,
                                description="opaque id of the user's session (e.g. a UUID): orders its actions "
                                "into workflows; hashed (keyed by the HMAC secret) on arrival, kept in memory only")]




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


class EventBase(Struct, tag_field="type", forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True,
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
    # Recorded after the other types of a backlog fold (exporter.ingest.backlog): a session's end after its actions.
    record_last: ClassVar[bool] = False

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


class DocumentProcessed(EventBase, tag="document_processed", kw_only=True):
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


class FeatureUsed(EventBase, tag="feature_used", kw_only=True):
    """A feature ran, successfully or not."""

    tier: Tier
    feature: Name
    outcome: Outcome = "success"

    def apply(self, rec, users):
        rec.feature_used(self.tier, self.feature, self.outcome)

    @classmethod
    def record_all(cls, events, rec, users):
        rec.count_each("clary_feature_uses_total", [(e.tier, e.feature, e.outcome) for e in events])


class FeatureBlocked(EventBase, tag="feature_blocked", kw_only=True):
    """A feature refused because the caller's tier lacks it (upgrade potential)."""

    tier: Tier
    feature: Name

    def apply(self, rec, users):
        rec.feature_blocked(self.tier, self.feature)

    @classmethod
    def record_all(cls, events, rec, users):
        rec.count_each("clary_feature_blocked_total", [(e.tier, e.feature) for e in events])


class QuotaExceeded(EventBase, tag="quota_exceeded", kw_only=True):
    """A request refused because the tier's limit ran out."""

    tier: Tier
    limit: Annotated[str, Meta(min_length=1, max_length=64, description="documents, features or api_calls")]

    def apply(self, rec, users):
        rec.quota_exceeded(self.tier, self.limit)

    @classmethod
    def record_all(cls, events, rec, users):
        rec.count_each("clary_quota_exceeded_total", [(e.tier, e.limit) for e in events])


class TemplateUsed(EventBase, tag="template_used", kw_only=True):
    """An extraction template was used."""

    tier: Tier
    kind: Literal["builtin", "custom"]

    def apply(self, rec, users):
        rec.template_used(self.tier, self.kind)

    @classmethod
    def record_all(cls, events, rec, users):
        rec.count_each("clary_template_uses_total", [(e.tier, e.kind) for e in events])


class ApiCall(EventBase, tag="api_call", kw_only=True):
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


class Inference(EventBase, tag="inference", kw_only=True):
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


class ModelLoad(EventBase, tag="model_load", kw_only=True):
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
        rec.set_each("clary_model_last_load_duration_seconds", models, [e.duration_seconds for e in events])
        rec.set_each("clary_model_memory_bytes", models, [e.memory_bytes for e in events])


class QueueLength(EventBase, tag="queue_length", kw_only=True):
    """Jobs currently waiting in a queue."""

    queue: Name
    length: Gauge

    def apply(self, rec, users):
        rec.queue_length(self.queue, self.length)

    @classmethod
    def record_all(cls, events, rec, users):
        rec.set_each("clary_queue_length", [(e.queue,) for e in events], [e.length for e in events])


class LlmCall(EventBase, tag="llm_call", kw_only=True):
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


class LicenseValidation(EventBase, tag="license_validation", kw_only=True):
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


class LicenseStatus(EventBase, tag="license_status", kw_only=True):
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


class UserAction(EventBase, tag="user_action", kw_only=True):
    """A user did something (login, upload...)."""

    tier: Tier
    action: Name
    user_id: UserId | None = None
    session_id: SessionId | None = None

    def apply(self, rec, users):
        user = self.user_id if self.user_id and users.track(self.tier, self.user_id, self.action) else None
        rec.user_action(self.tier, self.action, user)
        if self.session_id and (user or not self.user_id):
            rec.workflow_actions(((self.tier, self.action, self.session_id, user),))

    @classmethod
    def record_all(cls, events, rec, users):
        kept = _track_users(rec, users, [(e.tier, e.user_id, e.action) for e in events if e.user_id])
        rec.count_each("clary_user_actions_total", [(e.tier, e.action) for e in events])
        in_sessions = [e for e in events if e.session_id]
        if in_sessions:  # an opted-out user's actions (not kept) leave no session state
            kept_users = set(kept)
            rec.workflow_actions([(e.tier, e.action, e.session_id, e.user_id) for e in in_sessions
                                  if not e.user_id or (e.tier, e.user_id) in kept_users])


class Session(EventBase, tag="session", kw_only=True):
    """A finished user session."""

    tier: Tier
    duration_seconds: Seconds
    user_id: UserId | None = None
    session_id: SessionId | None = None
    record_last: ClassVar[bool] = True  # ends the sessions whose actions arrived before it

    def apply(self, rec, users):
        rec.session_ended(self.tier, self.duration_seconds)
        if self.user_id and users.track(self.tier, self.user_id, "session"):
            rec.user_seen(self.tier, self.user_id)
        if self.session_id:
            rec.workflow_ended((self.session_id,))

    @classmethod
    def record_all(cls, events, rec, users):
        _track_users(rec, users, [(e.tier, e.user_id, "session") for e in events if e.user_id])
        rec.observe_each("clary_session_duration_seconds", [(e.tier,) for e in events],
                         [e.duration_seconds for e in events])
        ended = [e.session_id for e in events if e.session_id]
        if ended:
            rec.workflow_ended(ended)


class ErrorOccurred(EventBase, tag="error", kw_only=True):
    """An unhandled exception's record (exporter.instrument.error_report), stored by exporter.api.error_sink."""

    tier: Tier
    error_id: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    error_type: Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[\w.]+$")]
    route: Route
    message: Annotated[str, Meta(max_length=1024)] = ""
    trace: Annotated[str, Meta(max_length=4096)] = ""
    user_id: UserId | None = None
    time: Annotated[float, Meta(ge=0, le=1e11, description="unix time; arrival if absent")] | None = None

    def apply(self, rec, users):
        pass  # no metric of its own: the service counted clary_errors_total; the store keeps the record

    @classmethod
    def record_all(cls, events, rec, users):
        pass


def _track_users(rec: Recorder, users: UserTracking, activity: Iterable[tuple[str, str, str]]) -> list:
    """Per-user state for (tier, user id, kind) triples: each distinct one tracked once, with its count;
    returns the (tier, user id) pairs kept (the users not opted out)."""
    counts: dict[tuple[str, str, str], int] = {}
    count_elements(counts, activity)
    kept = users.track_all(counts)
    rec.users_seen(kept)
    return kept


EVENT_MODELS: tuple[type[EventBase], ...] = (
    DocumentProcessed, FeatureUsed, FeatureBlocked, QuotaExceeded, TemplateUsed, ApiCall, Inference,
    ModelLoad, QueueLength, LlmCall, LicenseValidation, LicenseStatus, UserAction, Session,
    ErrorOccurred,
)
for _model in EVENT_MODELS:
    _model.type = _model.__struct_config__.tag  # event.type, as recorded in clary_exporter_events_total
EVENT_TYPES: tuple[str, ...] = tuple(m.type for m in EVENT_MODELS)
Event = Union[EVENT_MODELS]  # type: ignore[valid-type]
