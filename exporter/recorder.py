"""The recording API: what a Clary service reports beyond HTTP traffic.

Every call validates and bounds its labels once (through the catalog's
guard) and lands in prometheus_client objects. Calls are synchronous and
cheap, so they are safe from both sync and async code. Identifiers (user
ids, license keys) are HMAC-hashed here and never stored raw.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from exporter.activity import ActiveLicenses, ActiveUsers
from exporter.catalog import TIER
from exporter.metrics import CatalogMetrics
from exporter.privacy import Hasher

URGENT_RATING = 2


@dataclass
class _Outcome:
    """Mutable outcome for a timed block; the caller may mark a soft failure."""

    value: str = "success"

    def fail(self) -> None:
        self.value = "failure"


class Recorder:
    """Typed entry points onto the catalog metrics."""

    def __init__(
        self,
        registry: CollectorRegistry,
        hasher: Hasher,
        allow_lists: Mapping[str, Iterable[str]] | None = None,
    ):
        self.metrics = CatalogMetrics(registry, allow_lists)
        self.hasher = hasher
        self.active_users = ActiveUsers()
        self.active_licenses = ActiveLicenses()
        registry.register(self.active_users)
        registry.register(self.active_licenses)
        self._child = self.metrics.child

    def _tier(self, tier: str) -> str:
        return self.metrics.guard.value(TIER, tier)

    # --- API traffic ------------------------------------------------------

    def http_request(self, tier: str, method: str, route: str, code: int, duration: float) -> None:
        self._child("clary_http_requests_total", tier, method, route, code).inc()
        self._child("clary_http_request_duration_seconds", tier, method, route).observe(duration)

    def error(self, tier: str, error_type: str, route: str) -> None:
        self._child("clary_errors_total", tier, error_type, route).inc()

    # --- documents and features -------------------------------------------

    def document_processed(
        self,
        tier: str,
        doc_type: str,
        outcome: str,
        duration: float | None = None,
        features: Iterable[str] = (),
    ) -> None:
        """One document finished; its features count as used with the same outcome."""
        features = list(features)
        self._child("clary_documents_processed_total", tier, doc_type, outcome).inc()
        if duration is not None:
            self._child("clary_document_processing_duration_seconds", tier, doc_type).observe(duration)
        if features:
            self._child("clary_features_per_document", tier).observe(len(features))
        for feature in features:
            self.feature_used(tier, feature, outcome)

    def feature_used(self, tier: str, feature: str, outcome: str = "success") -> None:
        self._child("clary_feature_uses_total", tier, feature, outcome).inc()

    def feature_blocked(self, tier: str, feature: str) -> None:
        self._child("clary_feature_blocked_total", tier, feature).inc()

    def quota_exceeded(self, tier: str, limit: str) -> None:
        self._child("clary_quota_exceeded_total", tier, limit).inc()

    def template_used(self, tier: str, kind: str) -> None:
        self._child("clary_template_uses_total", tier, kind).inc()

    # --- models and inference ---------------------------------------------

    def inference(self, tier: str, model: str, outcome: str, duration: float) -> None:
        self._child("clary_inference_requests_total", tier, model, outcome).inc()
        self._child("clary_inference_duration_seconds", tier, model).observe(duration)

    @contextmanager
    def time_inference(self, tier: str, model: str) -> Iterator[_Outcome]:
        """Time a block; an exception (re-raised) or ``.fail()`` makes it a failure."""
        outcome = _Outcome()
        start = time.perf_counter()
        try:
            yield outcome
        except BaseException:
            outcome.fail()
            raise
        finally:
            self.inference(tier, model, outcome.value, time.perf_counter() - start)

    def model_loaded(self, model: str, duration: float, memory_bytes: float | None = None) -> None:
        self._child("clary_model_load_duration_seconds", model).observe(duration)
        if memory_bytes is not None:
            self._child("clary_model_memory_bytes", model).set(memory_bytes)

    def queue_length(self, queue: str, length: float) -> None:
        self._child("clary_queue_length", queue).set(length)

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
        self._child("clary_llm_requests_total", tier, provider, model, outcome).inc()
        self._child("clary_llm_request_duration_seconds", provider, model).observe(duration)
        if time_to_first_token is not None:
            self._child("clary_llm_time_to_first_token_seconds", provider, model).observe(time_to_first_token)
        for direction, tokens in (("input", input_tokens), ("output", output_tokens)):
            if tokens:
                self._child("clary_llm_tokens_total", tier, provider, model, direction).inc(tokens)

    # --- license -----------------------------------------------------------

    def license_validation(
        self, tier: str, result: str, duration: float | None = None, license_key: str | None = None
    ) -> None:
        self._child("clary_license_validations_total", tier, result).inc()
        if duration is not None:
            self._child("clary_license_validation_duration_seconds").observe(duration)
        if license_key:
            self.active_licenses.seen(self._tier(tier), self.hasher.license_id(license_key))

    def license_status(
        self,
        tier: str,
        license_key: str,
        expires_at: float | None = None,
        usage: Mapping[str, float] | None = None,
        limits: Mapping[str, float] | None = None,
    ) -> str:
        """Expiry and usage-against-limit gauges; returns the license's HMAC id."""
        license_id = self.hasher.license_id(license_key)
        if expires_at is not None:
            self._child("clary_license_expiry_timestamp_seconds", license_id, tier).set(expires_at)
        for name, values in (("clary_license_usage", usage), ("clary_license_limit", limits)):
            for limit, value in (values or {}).items():
                self._child(name, license_id, tier, limit).set(value)
        return license_id

    # --- feedback ----------------------------------------------------------

    def feedback(self, tier: str, feedback_type: str, rating: int | None = None) -> bool:
        """Count a submission; returns True when it is urgent (a bug rated <= 2)."""
        if rating is not None and not 1 <= rating <= 5:
            raise ValueError(f"rating must be 1..5, got {rating!r}")
        self._child("clary_feedback_submissions_total", tier, feedback_type).inc()
        if rating is not None:
            self._child("clary_feedback_rating", tier, feedback_type).observe(rating)
        urgent = feedback_type == "bug" and rating is not None and rating <= URGENT_RATING
        if urgent:
            self._child("clary_feedback_urgent_total", tier).inc()
        return urgent

    # --- users ---------------------------------------------------------------

    def user_seen(self, tier: str, user_id: str) -> None:
        """Count a user as active; only the HMAC of the id enters the sketch."""
        self.active_users.seen(self._tier(tier), self.hasher.digest(user_id))

    def user_action(self, tier: str, action: str, user_id: str | None = None) -> None:
        self._child("clary_user_actions_total", tier, action).inc()
        if user_id:
            self.user_seen(tier, user_id)

    def session_ended(self, tier: str, duration: float) -> None:
        self._child("clary_session_duration_seconds", tier).observe(duration)

    # --- the exporter itself ---------------------------------------------

    def event(self, event_type: str, outcome: str) -> None:
        self._child("clary_exporter_events_total", event_type, outcome).inc()
