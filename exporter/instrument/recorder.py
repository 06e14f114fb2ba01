"""The recording API: what a Clary service reports beyond HTTP traffic.

Every call validates and bounds its labels once (through the catalog's
guard) and lands in prometheus_client objects. Calls are synchronous, cheap
(a dict lookup and a locked addition once a label combination has been
seen) and thread-safe, so they are safe from sync code, async code and
worker threads alike; the timers (``time_inference``, ``time_document``)
work as ``with``, ``async with`` and as decorators of sync or async
functions. Identifiers (user ids, license keys, session ids) are
HMAC-hashed here and never stored raw.

Opt-out: ``is_opted_out(hashed_user) -> bool`` decides, per HMAC-hashed
user id, whether a user may leave per-user traces. Opted-out users still
count in every aggregate counter, but never enter the active-user sketches
and never get session state.
"""

from __future__ import annotations

import secrets
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import overload

from exporter.catalog import ACTION
from exporter.instrument import _compat
from exporter.instrument.recorder_core import DIGEST_CACHE_LIMIT, RecorderCore
from exporter.instrument.sentiment import NEGATIVE_AT
from exporter.instrument.timing import Timed

URGENT_RATING = 2
LOW_RATING = 2  # a rating at or below this is low (pain points, clary_feedback_feature_low_ratings_total)
# Bounds on the hot-path caches (raw values -> prepared objects); past them lookups still work.
HTTP_SERIES_CACHE_LIMIT = 10_000


class Recorder(RecorderCore):
    """Typed entry points onto the catalog metrics (arguments: :class:`RecorderCore`)."""

    # --- API traffic ------------------------------------------------------

    def http_request(
        self, tier: str, method: str, route: str, code: int, duration: float, trace_id: str | None = None
    ) -> None:
        """One HTTP request finished.

        Args:
            tier: the caller's tier (anything else counts as ``unknown``).
            method: HTTP method; outside the standard set it counts as ``other``.
            route: the router's template (``/api/v1/documents/{id}``), never a raw path.
            code: response status, 100..599 (else ``LabelRejected``).
            duration: seconds from request start to response end.
            trace_id: 32-hex trace id, attached to the duration as an exemplar.

        The hot path of both middlewares: after the first request with these
        raw labels, one dict lookup, one counter addition, one bucket and one
        sum addition (no ``labels()`` call).
        """
        series = self._http.get((tier, method, route, code))
        if series is None:
            series = self._http_series(tier, method, route, code)
        count, total, buckets, bounds, child = series
        count(1)
        if trace_id is None and buckets is not None:
            total(duration)
            buckets[bisect_left(bounds, duration)](1)
        else:
            child.observe(duration, {"trace_id": trace_id} if trace_id else None)

    def _http_series(self, tier: str, method: str, route: str, code: int) -> tuple:
        counter = self._child("clary_http_requests_total", tier, method, route, code)
        histogram = self._child("clary_http_request_duration_seconds", tier, method, route)
        count = _compat.counter_inc(counter)
        parts = _compat.histogram_parts(histogram)
        if parts is None:  # another prometheus_client layout: observe through the public API
            total = buckets = bounds = None
        else:
            total, buckets, bounds = parts.total.inc, [bucket.inc for bucket in parts.buckets], parts.bounds
        series = (count, total, buckets, bounds, histogram)
        if len(self._http) < HTTP_SERIES_CACHE_LIMIT:
            self._http[tier, method, route, code] = series
        return series

    def error(self, tier: str, error_type: str, route: str) -> None:
        """An unhandled exception of type ``error_type`` (allow-list; else ``other``) on ``route``."""
        self._inc("clary_errors_total", (tier, error_type, route))

    # --- documents and features -------------------------------------------

    def document_processed(
        self,
        tier: str,
        doc_type: str,
        outcome: str,
        duration: float | None = None,
        features: Iterable[str] = (),
    ) -> None:
        """One document finished; its features count as used with the same outcome.

        Args:
            tier: the caller's tier.
            doc_type: ``pdf``, ``docx``, ... (allow-list; else ``other``).
            outcome: ``success`` or ``failure`` (anything else: ``LabelRejected``).
            duration: processing wall time in seconds, when known.
            features: features applied to the document (each counted as used).
        """
        if not isinstance(features, (list, tuple)):
            features = list(features)
        self._inc("clary_documents_processed_total", (tier, doc_type, outcome))
        if duration is not None:
            self._observe("clary_document_processing_duration_seconds", (tier, doc_type), duration)
        if features:
            self._observe("clary_features_per_document", (tier,), len(features))
            for feature in features:
                self._inc("clary_feature_uses_total", (tier, feature, outcome))

    def time_document(self, tier: str, doc_type: str, features: Iterable[str] = ()) -> Timed:
        """Time processing one document; records it like :meth:`document_processed`.

        An exception (re-raised) or ``.fail()`` makes the outcome ``failure``.
        Works as ``with``, ``async with`` and as a decorator (sync or async).
        """
        features = tuple(features)
        return Timed(lambda outcome, duration: self.document_processed(tier, doc_type, outcome, duration, features))

    def feature_used(self, tier: str, feature: str, outcome: str = "success") -> None:
        """A feature ran (``ocr``, ``redaction``...), successfully or not."""
        self._inc("clary_feature_uses_total", (tier, feature, outcome))

    def feature_blocked(self, tier: str, feature: str) -> None:
        """A feature was refused because the caller's tier lacks it (upgrade potential)."""
        self._inc("clary_feature_blocked_total", (tier, feature))

    def quota_exceeded(self, tier: str, limit: str) -> None:
        """A request was refused because the tier's ``limit`` (documents, features, api_calls) ran out."""
        self._inc("clary_quota_exceeded_total", (tier, limit))

    def template_used(self, tier: str, kind: str) -> None:
        """An extraction template was used; ``kind`` is ``builtin`` or ``custom``."""
        self._inc("clary_template_uses_total", (tier, kind))

    # --- models and inference ---------------------------------------------

    def inference(self, tier: str, model: str, outcome: str, duration: float) -> None:
        """One model inference: outcome (``success``/``failure``) and latency in seconds."""
        self._inc("clary_inference_requests_total", (tier, model, outcome))
        self._observe("clary_inference_duration_seconds", (tier, model), duration)

    def time_inference(self, tier: str, model: str) -> Timed:
        """Time an inference; an exception (re-raised) or ``.fail()`` makes it a failure.

        ``with rec.time_inference(tier, model) as t: ...``, ``async with ...``,
        or ``@rec.time_inference(tier, model)`` on a sync or async function.
        """
        return Timed(lambda outcome, duration: self.inference(tier, model, outcome, duration))

    def model_loaded(self, model: str, duration: float, memory_bytes: float | None = None) -> None:
        """A model finished loading: load time (histogram, and the latest as a gauge) and, when known, its memory.

        Loads are rare: a quantile over a few minutes' rate() of the
        histogram is empty (NaN) minutes after a load, so dashboards show the
        latest load's true time from the gauge.
        """
        self._observe("clary_model_load_duration_seconds", (model,), duration)
        self._set("clary_model_last_load_duration_seconds", (model,), duration)
        if memory_bytes is not None:
            self._set("clary_model_memory_bytes", (model,), memory_bytes)

    def queue_length(self, queue: str, length: float) -> None:
        """Jobs currently waiting in ``queue`` (a gauge: set, not added)."""
        self._set("clary_queue_length", (queue,), length)

    # --- cloud LLM ----------------------------------------------------------

    def llm_call(
        self,
        tier: str,
        provider: str,
        model: str,
        outcome: str,
        duration: float,
        time_to_first_token: float | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        """One cloud-LLM call.

        Args:
            tier: the caller's tier.
            provider: ``openai``, ``anthropic``, ... (allow-list; else ``other``).
            model: model name (allow-list; else ``other``).
            outcome: ``success`` or ``failure``.
            duration: seconds from request sent to last token received.
            time_to_first_token: seconds to the first streamed token, when streaming.
            input_tokens: prompt tokens; output_tokens: completion tokens.
        """
        self._inc("clary_llm_requests_total", (tier, provider, model, outcome))
        self._observe("clary_llm_request_duration_seconds", (provider, model), duration)
        if time_to_first_token is not None:
            self._observe("clary_llm_time_to_first_token_seconds", (provider, model), time_to_first_token)
        for direction, tokens in (("input", input_tokens), ("output", output_tokens)):
            if tokens:
                self._inc("clary_llm_tokens_total", (tier, provider, model, direction), tokens)

    # --- license -----------------------------------------------------------

    def license_validation(
        self, tier: str, result: str, duration: float | None = None, license_key: str | None = None
    ) -> None:
        """A license check: ``valid``, ``invalid``, ``expired``, ``revoked`` or ``error``.

        With ``license_key`` the license counts as active (24 h); only its
        HMAC id is kept, never the key.
        """
        self._inc("clary_license_validations_total", (tier, result))
        if duration is not None:
            self._observe("clary_license_validation_duration_seconds", (), duration)
        if license_key:
            self.license_active(tier, license_key)

    def license_active(self, tier: str, license_key: str) -> None:
        """Count a license as active (24 h) by its HMAC id; the key itself is never kept."""
        self.active_licenses.seen(self._tier(tier), self._license_id(license_key))

    def license_status(
        self,
        tier: str,
        license_key: str,
        expires_at: float | None = None,
        usage: Mapping[str, float] | None = None,
        limits: Mapping[str, float] | None = None,
    ) -> str:
        """Expiry and usage-against-limit gauges; returns the license's HMAC id.

        Args:
            tier: the license's tier.
            license_key: the raw key; only its 12-hex HMAC id becomes a label.
            expires_at: Unix time of expiry.
            usage: current usage per limit name (``documents``, ...).
            limits: the limit granted per limit name.
        """
        license_id = self._license_id(license_key)
        if expires_at is not None:
            self._set("clary_license_expiry_timestamp_seconds", (license_id, tier), expires_at)
        for name, values in (("clary_license_usage", usage), ("clary_license_limit", limits)):
            for limit, value in (values or {}).items():
                self._set(name, (license_id, tier, limit), value)
        return license_id

    # --- feedback ----------------------------------------------------------

    def feedback(self, tier: str, feedback_type: str, rating: int | None = None, *,
                 feature: str | None = None, sentiment: float | None = None) -> bool:
        """Count a submission; returns True when it is urgent (a bug rated <= 2).

        Args:
            feature: the feature the feedback is about (allow-list; else ``other``);
                counted per feature, with its low ratings and negative texts.
            sentiment: the text's compound score, -1..1
                (:func:`exporter.instrument.sentiment.score`); None: no text.
        """
        if rating is not None and not 1 <= rating <= 5:
            raise ValueError(f"rating must be 1..5, got {rating!r}")
        if sentiment is not None and not -1 <= sentiment <= 1:
            raise ValueError(f"sentiment must be -1..1, got {sentiment!r}")
        self._inc("clary_feedback_submissions_total", (tier, feedback_type))
        if rating is not None:
            self._observe("clary_feedback_rating", (tier, feedback_type), rating)
        if sentiment is not None:
            self._observe("clary_feedback_sentiment", (tier, feedback_type), sentiment)
        if feature is not None:
            self._inc("clary_feedback_feature_submissions_total", (tier, feature, feedback_type))
            if rating is not None and rating <= LOW_RATING:
                self._inc("clary_feedback_feature_low_ratings_total", (tier, feature))
            if sentiment is not None and sentiment <= NEGATIVE_AT:
                self._inc("clary_feedback_feature_negative_total", (tier, feature))
        urgent = feedback_type == "bug" and rating is not None and rating <= URGENT_RATING
        if urgent:
            self._inc("clary_feedback_urgent_total", (tier,))
        return urgent

    # --- users and sessions ----------------------------------------------

    def _hashed_user(self, user_id: str) -> str | None:
        """The user's HMAC, or None when the user opted out (nothing is kept for them)."""
        hashed = self._digests.get(user_id)
        if hashed is None:
            hashed = self.hasher.digest(user_id)
            if self.is_opted_out is not None and self.is_opted_out(hashed):
                return None
            if len(self._digests) >= DIGEST_CACHE_LIMIT:
                self._digests.clear()
            self._digests[user_id] = hashed
        elif self.is_opted_out is not None and self.is_opted_out(hashed):
            self._digests.pop(user_id, None)
            return None
        return hashed

    def user_seen(self, tier: str, user_id: str) -> None:
        """Count a user as active (5m, 1h, 24h windows); only the HMAC of the id is used.

        Opted-out users are skipped. Repeat calls within the same minute are
        a dict and a set lookup, so the middleware calls this per request.
        """
        hashed = self._hashed_user(user_id)
        if hashed is not None:
            self.active_users.seen(self._tier(tier), hashed)

    def users_seen(self, users: Iterable[tuple[str, str]]) -> None:
        """:meth:`user_seen` for each (tier, raw user id) pair; the sketches' lock is taken once for all."""
        tier_label, hashed_user = self._tier, self._hashed_user
        self.active_users.seen_all([(tier_label(tier), hashed) for tier, user_id in users
                                    if (hashed := hashed_user(user_id)) is not None])

    def user_action(self, tier: str, action: str, user_id: str | None = None, session_id: str | None = None) -> None:
        """A user did something (``login``, ``upload``...); with a user id it also counts as active.

        With ``session_id`` (opaque, e.g. a UUID per session; only its keyed hash
        is kept, in memory) the action also extends that session's workflow:
        see :meth:`workflow_actions`.
        """
        self._inc("clary_user_actions_total", (tier, action))
        if user_id:
            self.user_seen(tier, user_id)
        if session_id:
            self.workflow_actions(((tier, action, session_id, user_id),))

    def workflow_actions(self, actions: Iterable[tuple[str, str, str, str | None]]) -> None:
        """``(tier, action, session id, user id or None)``, in the order they happened.

        Counts ``clary_workflow_transitions_total`` (previous action, or
        ``start``, to this one) and ``clary_funnel_sessions_total`` (steps of
        the configured funnels reached in order). Actions outside the action
        allow-list count as ``other``. An opted-out user's actions leave no
        session state. A session ends (``end``) with :meth:`workflow_ended`
        or once idle past the timeout; :mod:`exporter.instrument.workflows`.
        """
        tier_label, hashed_user, session_key = self._tier, self._hashed_user, self.hasher.session_key
        guard_value = self.metrics.guard.value
        kept = [(tier_label(tier), guard_value(ACTION, action), session_key(session_id))
                for tier, action, session_id, user_id in actions
                if not user_id or hashed_user(user_id) is not None]
        if kept:
            self._count_moves(self.workflows.actions(kept))

    def workflow_ended(self, session_ids: Iterable[str]) -> None:
        """Sessions ended: each counts its last action -> ``end`` (unknown or expired ids count nothing)."""
        session_key = self.hasher.session_key
        self._count_moves(self.workflows.end([session_key(session_id) for session_id in session_ids]))

    def session_started(self, tier: str, user_id: str | None = None) -> str:
        """Start a session; returns an opaque token to pass to ``session_ended``.

        With a user id the user also counts as active. Memory is bounded: at
        most ``max_sessions`` open sessions (the oldest is forgotten), none
        older than 24 h. An opted-out user gets a token but no session state,
        so ending it records nothing.
        """
        token = secrets.token_hex(16)
        if user_id:
            if self._hashed_user(user_id) is None:
                return token
            self.user_seen(tier, user_id)
        self._sessions.start(token, self._tier(tier))
        return token

    @property
    def open_sessions(self) -> int:
        """Sessions started and neither ended nor forgotten yet."""
        return len(self._sessions)

    @overload
    def session_ended(self, token: str, /) -> float | None: ...

    @overload
    def session_ended(self, tier: str, duration: float, /) -> float: ...

    def session_ended(self, tier_or_token: str, duration: float | None = None, /) -> float | None:
        """A session ended; observes its duration in ``clary_session_duration_seconds``.

        ``session_ended(token)`` ends a session from ``session_started`` and
        returns its duration, or None (nothing recorded) for an unknown,
        already ended, forgotten or opted-out token.
        ``session_ended(tier, duration)`` records a duration measured
        elsewhere (a session that spans processes) and returns it.
        """
        if duration is not None:
            self._observe("clary_session_duration_seconds", (tier_or_token,), duration)
            return duration
        found = self._sessions.end(tier_or_token)
        if found is None:
            return None
        tier, elapsed = found
        self._observe("clary_session_duration_seconds", (tier,), elapsed)
        return elapsed

    # --- the exporter itself ---------------------------------------------

    def event(self, event_type: str, outcome: str, count: int = 1) -> None:
        """``count`` ingested events of one type were accepted or rejected (the exporter's own health)."""
        self._inc("clary_exporter_events_total", (event_type, outcome), count)
