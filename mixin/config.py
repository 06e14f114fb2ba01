"""The one config of the rules and the dashboards: :class:`Config` and its site-file loader.

Everything a site may want to change lives here, apart from the rule groups
and panels that read it, so a threshold is changed in one place: the alert
that watches a value and the panel that colours it read the same field.
``--config site.yml`` (``python -m alerts.generate`` and ``clary-dashboards``
alike) overrides any field without touching code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from exporter.catalog import TIERS, spec
from exporter.promql import Matchers

from . import selector as _selector
from .slo import BURN_RATE_WINDOWS, SLO_NAMES, num

__all__ = ["PLACEHOLDER_URL", "RECEIVERS", "SEVERITIES", "TEAMS", "TIERS", "Config"]

SEVERITIES = ("critical", "warning", "info")
TEAMS = ("sre", "ml", "licensing", "support")

RECEIVERS: Mapping[str, str] = MappingProxyType(
    {
        "clary-oncall-pager": "severity=critical: pages the on-call engineer",
        "clary-ticket": "severity=warning (and anything unrouted): a ticket or chat message, worked in office hours",
        "clary-chat": "severity=info: a chat channel, no action expected",
        "clary-support": "team=support (urgent bug reports, rating drops): the support team",
        "clary-development": "team=support (urgent bug reports, rating drops): the development team",
        "clary-licensing": "team=licensing (expiry, compliance, rejected keys): the licensing/account team's queue",
        "clary-deadmansswitch": "Watchdog: an external heartbeat service that alerts when the pings stop",
    }
)

PLACEHOLDER_URL = "http://alert-webhook.invalid/clary/{receiver}"

# The request-duration histogram the latency SLO reads its buckets from.
LATENCY_HISTOGRAM = "clary_http_request_duration_seconds"


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


def _per_tier(**values: float):
    return field(default_factory=lambda: _frozen(values))


@dataclass(frozen=True)
class Config:
    """Every knob of the generated rules and dashboards. Defaults are the shipped values."""

    # What the rules and dashboards select. ``selector`` picks the series of
    # Clary metrics (the exporter, and library-mode services if they share the
    # job); ``service_selector`` the scrape targets of services instrumented
    # in library mode (their ``up``); ``cluster_label`` the label that tells
    # clusters apart (rules keep it in every aggregation, dashboards filter it).
    selector: str = 'job="clary-exporter"'
    service_selector: str = 'job="clary-services"'
    cluster_label: str = "cluster"
    # SLO targets per tier: share of good events over a 30-day period.
    availability_slo: Mapping[str, float] = _per_tier(lite=0.99, standard=0.995, professional=0.999)
    latency_slo: Mapping[str, float] = _per_tier(lite=0.95, standard=0.95, professional=0.95)
    document_slo: Mapping[str, float] = _per_tier(lite=0.98, standard=0.99, professional=0.995)
    # Burn-rate alerts need this many events in their short window; below it
    # a tier is "low traffic" and the ratio alerts (error spike, document
    # failures) cover it.
    burn_rate_min_events: int = 10
    # ClaryHttpErrorSpike: 5xx ratio over 30m and the errors it takes.
    error_spike_ratio: float = 0.10
    error_spike_min_errors: int = 5
    # Latency per tier: the p95 alert's threshold, the latency SLO's "fast
    # enough", and the panels' red line.
    latency_p95_seconds: Mapping[str, float] = _per_tier(lite=2.5, standard=1.5, professional=1.0)
    latency_min_requests: int = 20
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99)
    # ClaryDocumentFailureRatioHigh: per tier and document type over 30m.
    document_failure_ratio: float = 0.10
    document_failure_min_failures: int = 5
    # License keys rejected (invalid, expired, revoked) over 30m: a ticket for licensing.
    license_failure_ratio: float = 0.10
    license_failure_min_validations: int = 20
    # License validations that errored (the license service is broken) over 5m: a page.
    license_error_ratio: float = 0.05
    license_error_min_errors: int = 5
    # ClaryLicenseValidationsStopped: requests in 1h with no validation.
    license_stopped_min_requests: int = 100
    license_expiry_warning_days: float = 14
    license_usage_near_ratio: float = 0.9
    # Inference, per model over 5m.
    inference_failure_ratio: float = 0.10
    inference_min_requests: int = 10
    model_unavailable_ratio: float = 0.99
    # Cloud LLM calls, per provider and model over 15m.
    llm_failure_ratio: float = 0.10
    llm_min_requests: int = 10
    llm_latency_p95_seconds: float = 30
    # Platform: unhandled exceptions per tier in 15m, jobs waiting per queue,
    # rejected events per type over 15m, a drop of the mean feedback rating.
    unhandled_exceptions_max: int = 10
    queue_backlog_max: int = 100
    events_rejected_ratio: float = 0.10
    events_rejected_min: int = 10
    feedback_rating_drop: float = 0.5
    feedback_min_ratings: int = 20
    # GPU.
    gpu_temperature_warning_celsius: float = 85
    gpu_temperature_critical_celsius: float = 90
    gpu_memory_ratio: float = 0.95
    # Alertmanager routing by team, tried before severity: team -> receivers
    # (every receiver listed gets the alert).
    team_receivers: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: _frozen(
            {"support": ("clary-support", "clary-development"), "licensing": ("clary-licensing",)}
        )
    )
    # Where alerts/runbooks.md is browsed; each alert links <base>#<alertname lowercased>.
    runbook_base_url: str = "https://github.com/clary-ai/clary-monitoring/blob/main/alerts/runbooks.md"
    # Alertmanager: webhook URL per receiver (placeholders by default) and
    # optional raw receiver bodies (pagerduty_configs, slack_configs, ...)
    # that replace a receiver's webhook entirely.
    webhook_urls: Mapping[str, str] = field(
        default_factory=lambda: _frozen({name: PLACEHOLDER_URL.format(receiver=name) for name in RECEIVERS})
    )
    receiver_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: _frozen({}))

    def __post_init__(self) -> None:
        errors = list(self._problems())
        if errors:
            raise ValueError("invalid config: " + "; ".join(errors))

    # --- validation ---------------------------------------------------------

    def _problems(self):
        yield from self._selector_problems()
        for slo in SLO_NAMES:
            name = _SLO_FIELDS[slo]
            targets = getattr(self, name)
            if set(targets) != set(TIERS):
                yield f"{name} needs exactly the tiers {list(TIERS)}, got {sorted(targets)}"
                continue
            for tier, target in targets.items():
                if not isinstance(target, (int, float)) or not 0 < target < 1:
                    yield f"{name}[{tier}] must be between 0 and 1 exclusive, got {target!r}"
                elif max(b.factor for b in BURN_RATE_WINDOWS) * (1 - target) >= 1:
                    yield f"{name}[{tier}] {target} leaves no room for a 14.4x burn rate"
        for name in ("error_spike_ratio", "document_failure_ratio", "license_failure_ratio", "license_error_ratio",
                     "inference_failure_ratio", "model_unavailable_ratio", "llm_failure_ratio", "events_rejected_ratio",
                     "gpu_memory_ratio", "license_usage_near_ratio"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value <= 1:
                yield f"{name} must be in (0, 1], got {value!r}"
        for name in ("burn_rate_min_events", "error_spike_min_errors", "latency_min_requests",
                     "document_failure_min_failures", "license_failure_min_validations", "license_error_min_errors",
                     "license_stopped_min_requests", "inference_min_requests", "llm_min_requests",
                     "unhandled_exceptions_max", "queue_backlog_max", "events_rejected_min", "feedback_min_ratings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                yield f"{name} must be a positive integer, got {value!r}"
        for name in ("license_expiry_warning_days", "llm_latency_p95_seconds", "feedback_rating_drop"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                yield f"{name} must be a positive number, got {value!r}"
        if not self.gpu_temperature_warning_celsius < self.gpu_temperature_critical_celsius:
            yield "need gpu_temperature_warning_celsius < gpu_temperature_critical_celsius"
        yield from self._latency_problems()
        if 0.95 not in self.quantiles or any(not 0 < q < 1 for q in self.quantiles):
            yield f"quantiles must lie in (0, 1) and include 0.95, got {self.quantiles}"
        if len(set(self.quantiles)) != len(self.quantiles):
            yield "quantiles must be distinct"
        yield from self._routing_problems()
        if "#" in self.runbook_base_url:
            yield "runbook_base_url must not contain '#': the alert's anchor is appended"

    def _selector_problems(self):
        for name in ("selector", "service_selector"):
            try:
                _selector.parse(getattr(self, name), name)
            except ValueError as exc:
                yield str(exc)
        if not isinstance(self.cluster_label, str) or not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", self.cluster_label):
            yield f"cluster_label {self.cluster_label!r} is not a label name"
        elif self.cluster_label in ("job", "instance", "le", "tier"):
            yield f"cluster_label {self.cluster_label!r} is already a label of the metrics"

    def _latency_problems(self):
        if set(self.latency_p95_seconds) != set(TIERS):
            yield f"latency_p95_seconds needs exactly the tiers {list(TIERS)}, got {sorted(self.latency_p95_seconds)}"
            return
        bounds = spec(LATENCY_HISTOGRAM).buckets
        for tier, value in self.latency_p95_seconds.items():
            if not isinstance(value, (int, float)) or not bounds[0] <= value <= bounds[-1]:
                yield (f"latency_p95_seconds[{tier}] must lie within the latency histogram's buckets "
                       f"[{num(bounds[0])}, {num(bounds[-1])}] s, got {value!r}")

    def _routing_problems(self):
        for name in ("webhook_urls", "receiver_overrides"):
            unknown = set(getattr(self, name)) - set(RECEIVERS)
            if unknown:
                yield f"{name} names unknown receivers {sorted(unknown)}; known: {list(RECEIVERS)}"
        missing = set(RECEIVERS) - set(self.webhook_urls)
        if missing:
            yield f"webhook_urls lacks {sorted(missing)}"
        for receiver, body in self.receiver_overrides.items():
            if not isinstance(body, Mapping) or not body or "name" in body:
                yield f"receiver_overrides[{receiver}] must be a non-empty mapping without 'name'"
        for team, receivers in self.team_receivers.items():
            if team not in TEAMS:
                yield f"team_receivers names unknown team {team!r}; teams: {list(TEAMS)}"
            if not receivers or any(r not in RECEIVERS or r == "clary-deadmansswitch" for r in receivers):
                yield f"team_receivers[{team}] must list receivers among {list(RECEIVERS)[:-1]}, got {list(receivers)}"

    # --- derived values -----------------------------------------------------

    @property
    def selector_matchers(self) -> Matchers:
        """The selector parsed: ``(("job", "clary-exporter"),)``."""
        return _selector.parse(self.selector, "selector")

    @property
    def service_matchers(self) -> Matchers:
        return _selector.parse(self.service_selector, "service_selector")

    @property
    def job(self) -> str:
        """The selector's job matcher value (``clary-exporter``; a regex when the selector uses ``=~``)."""
        matcher = dict(self.selector_matchers)["job"]
        return matcher if isinstance(matcher, str) else matcher.value

    def slo_targets(self, slo: str) -> Mapping[str, float]:
        """Per-tier targets of SLO ``slo`` (availability, latency, documents)."""
        return getattr(self, _SLO_FIELDS[slo])

    def error_budget(self, slo: str, tier: str) -> float:
        """``1 - target``, decimal (1 - 0.995 is 0.0050000000000000044 in binary)."""
        return float(num(1 - self.slo_targets(slo)[tier]))

    def latency_buckets(self, tier: str) -> tuple[tuple[float, float], ...]:
        """How the latency SLO counts requests within ``latency_p95_seconds[tier]`` from the buckets.

        ``((bound, weight), ...)``: the threshold itself when it is a bucket
        boundary (weight 1); otherwise the two boundaries around it, weighted
        for linear interpolation, the assumption ``histogram_quantile`` makes
        (1.5 s between 1 and 2.5 s: 2/3 of the ``le="1"`` count plus 1/3 of the
        ``le="2.5"`` count), so the SLI and the p95 alert read the histogram alike.
        """
        threshold = self.latency_p95_seconds[tier]
        bounds = spec(LATENCY_HISTOGRAM).buckets
        if threshold in bounds:
            return ((threshold, 1.0),)
        upper = next(b for b in bounds if b > threshold)
        lower = max(b for b in bounds if b < threshold)
        share = float(num((threshold - lower) / (upper - lower)))
        return ((lower, float(num(1 - share))), (upper, share))

    # --- loading ------------------------------------------------------------

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Config:
        """Defaults updated by ``data``; dict-valued fields are merged key by key."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: {sorted(known)}")
        base = cls()
        updates: dict[str, Any] = {}
        for key, value in data.items():
            current = getattr(base, key)
            if isinstance(current, Mapping):
                if not isinstance(value, Mapping):
                    raise ValueError(f"{key} must be a mapping")  # noqa: TRY004 - a config error, like every other
                if key == "team_receivers":
                    value = {team: tuple(receivers) if isinstance(receivers, (list, tuple)) else (receivers,)
                             for team, receivers in value.items()}
                updates[key] = _frozen({**current, **value})
            elif isinstance(current, tuple):
                updates[key] = tuple(value)
            else:
                updates[key] = value
        return replace(base, **updates)

    @classmethod
    def load(cls, path: str | Path | None) -> Config:
        """The defaults, or the defaults overridden by a YAML site file."""
        if path is None:
            return cls()
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: the config must be a YAML mapping")  # noqa: TRY004 - a config error
        return cls.from_mapping(data)

    def with_availability_target(self, target: float) -> Config:
        """Every tier's availability SLO set to ``target`` (``--slo-target``)."""
        return replace(self, availability_slo=_frozen({tier: target for tier in TIERS}))


_SLO_FIELDS = {"availability": "availability_slo", "latency": "latency_slo", "documents": "document_slo"}
