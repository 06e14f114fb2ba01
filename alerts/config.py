"""The knobs of the generated alerts: :class:`Config`, the burn-rate table, the receivers.

Everything a site may want to change lives here, apart from the rule
groups that read it (``alerts/groups/``), so a threshold is changed in one
place and ``--config site.yml`` can override any :class:`Config` field
without touching code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from exporter.catalog import TIERS

__all__ = [
    "BURN_RATE_WINDOWS",
    "PLACEHOLDER_URL",
    "RECEIVERS",
    "SEVERITIES",
    "SLO_PERIOD_DAYS",
    "SLO_WINDOWS",
    "TIERS",
    "BurnRateWindow",
    "Config",
    "num",
    "pct",
    "seconds",
]

SEVERITIES = ("critical", "warning", "info")

# --------------------------------------------------------------------------
# Durations


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def seconds(duration: str) -> int:
    """``"5m"`` -> 300. Only the single-unit forms the rules use."""
    match = re.fullmatch(r"(\d+)([smhdw])", duration)
    if not match:
        raise ValueError(f"unsupported duration {duration!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def num(value: float) -> str:
    """A number as PromQL/YAML text, without float noise (0.072, not 0.07200000000000001)."""
    return f"{value:.12g}"


def pct(ratio: float) -> str:
    """0.072 -> '7.2%'."""
    return f"{ratio * 100:.4g}%"


# --------------------------------------------------------------------------
# The multiwindow, multi-burn-rate table (Google SRE workbook, chapter 5)


@dataclass(frozen=True)
class BurnRateWindow:
    """Fire when the error ratio over both windows exceeds ``factor`` x budget.

    ``factor`` is how many times faster than sustainable the error budget of
    a 30-day SLO period is being spent; the long window gives significance,
    the short one makes the alert reset soon after the problem stops.
    """

    severity: str
    long: str
    short: str
    factor: float
    for_: str


SLO_PERIOD_DAYS = 30

BURN_RATE_WINDOWS: tuple[BurnRateWindow, ...] = (
    # page: 2 % of the 30-day budget in 1 hour, or 5 % in 6 hours
    BurnRateWindow("critical", "1h", "5m", 14.4, "2m"),
    BurnRateWindow("critical", "6h", "30m", 6, "5m"),
    # ticket: 10 % of the budget in 1 day, or 10 % in 3 days
    BurnRateWindow("warning", "1d", "2h", 3, "15m"),
    BurnRateWindow("warning", "3d", "6h", 1, "30m"),
)

# Every window some burn-rate alert reads, shortest first: 5m 30m 1h 2h 6h 1d 3d.
SLO_WINDOWS: tuple[str, ...] = tuple(
    sorted({w for b in BURN_RATE_WINDOWS for w in (b.long, b.short)}, key=seconds)
)

# --------------------------------------------------------------------------
# Alertmanager receivers

RECEIVERS: Mapping[str, str] = MappingProxyType(
    {
        "clary-oncall-pager": "severity=critical: pages the on-call engineer",
        "clary-ticket": "severity=warning (and anything unrouted): a ticket or chat message, worked in office hours",
        "clary-chat": "severity=info: a chat channel, no action expected",
        "clary-support": "team=support (urgent bug reports): the support team",
        "clary-development": "team=support (urgent bug reports): the development team",
        "clary-deadmansswitch": "Watchdog: an external heartbeat service that alerts when the pings stop",
    }
)

PLACEHOLDER_URL = "http://alert-webhook.invalid/clary/{receiver}"

# --------------------------------------------------------------------------
# Config


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Config:
    """Every knob of the generated rules. Defaults are the shipped values."""

    # Availability SLO: share of requests per tier that are not HTTP 5xx.
    slo_target: float = 0.995
    # Burn-rate alerts need this many requests in their short window; below
    # it a tier is "low traffic" and ClaryHttpErrorSpike covers it.
    burn_rate_min_requests: int = 10
    # ClaryHttpErrorSpike: 5xx ratio over 30m and the errors it takes.
    error_spike_ratio: float = 0.10
    error_spike_min_errors: int = 5
    # ClaryHttpLatencyHigh: p95 over 5m per tier, and the requests it takes.
    latency_p95_seconds: Mapping[str, float] = field(
        default_factory=lambda: _frozen({"lite": 2.5, "standard": 1.5, "professional": 1.0})
    )
    latency_min_requests: int = 20
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99)
    # License validation failure ratio (30m) and spike (5m).
    license_failure_ratio: float = 0.10
    license_failure_min_validations: int = 20
    license_spike_ratio: float = 0.5
    license_spike_min_failures: int = 10
    # ClaryLicenseValidationsStopped: requests in 1h with no validation.
    license_stopped_min_requests: int = 100
    license_expiry_warning_days: float = 14
    license_expiry_critical_days: float = 3
    license_usage_near_ratio: float = 0.9
    # Inference, per model over 5m.
    inference_failure_ratio: float = 0.10
    inference_min_requests: int = 10
    model_unavailable_ratio: float = 0.99
    # GPU.
    gpu_temperature_warning_celsius: float = 85
    gpu_temperature_critical_celsius: float = 90
    gpu_memory_ratio: float = 0.95
    # Prometheus job that scrapes the exporter (up, absent targets).
    exporter_job: str = "clary-exporter"
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
            raise ValueError("invalid alerts config: " + "; ".join(errors))

    def _problems(self):
        if not 0 < self.slo_target < 1:
            yield f"slo_target must be between 0 and 1 exclusive, got {self.slo_target}"
        elif max(b.factor for b in BURN_RATE_WINDOWS) * (1 - self.slo_target) >= 1:
            yield f"slo_target {self.slo_target} leaves no room for a 14.4x burn rate"
        for name in (
            "error_spike_ratio",
            "license_failure_ratio",
            "license_spike_ratio",
            "inference_failure_ratio",
            "model_unavailable_ratio",
            "gpu_memory_ratio",
            "license_usage_near_ratio",
        ):
            value = getattr(self, name)
            if not 0 < value <= 1:
                yield f"{name} must be in (0, 1], got {value}"
        for name in (
            "burn_rate_min_requests",
            "error_spike_min_errors",
            "latency_min_requests",
            "license_failure_min_validations",
            "license_spike_min_failures",
            "license_stopped_min_requests",
            "inference_min_requests",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                yield f"{name} must be a positive integer, got {value!r}"
        if not 0 < self.license_expiry_critical_days < self.license_expiry_warning_days:
            yield "need 0 < license_expiry_critical_days < license_expiry_warning_days"
        if not self.gpu_temperature_warning_celsius < self.gpu_temperature_critical_celsius:
            yield "need gpu_temperature_warning_celsius < gpu_temperature_critical_celsius"
        if set(self.latency_p95_seconds) != set(TIERS):
            yield f"latency_p95_seconds needs exactly the tiers {list(TIERS)}, got {sorted(self.latency_p95_seconds)}"
        if any(v <= 0 for v in self.latency_p95_seconds.values()):
            yield "latency_p95_seconds values must be positive"
        if 0.95 not in self.quantiles or any(not 0 < q < 1 for q in self.quantiles):
            yield f"quantiles must lie in (0, 1) and include 0.95, got {self.quantiles}"
        if len(set(self.quantiles)) != len(self.quantiles):
            yield "quantiles must be distinct"
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
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_-]*", self.exporter_job):
            yield f"exporter_job {self.exporter_job!r} is not a plain job name"
        if "#" in self.runbook_base_url:
            yield "runbook_base_url must not contain '#': the alert's anchor is appended"

    @property
    def error_budget(self) -> float:
        # 1 - 0.995 is 0.0050000000000000044 in binary; keep the decimal.
        return float(num(1 - self.slo_target))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Config:
        """Defaults updated by ``data``; dict-valued fields are merged key by key."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown alerts config keys {unknown}; known: {sorted(known)}")
        base = cls()
        updates: dict[str, Any] = {}
        for key, value in data.items():
            current = getattr(base, key)
            if isinstance(current, Mapping):
                if not isinstance(value, Mapping):
                    raise ValueError(f"{key} must be a mapping")
                updates[key] = _frozen({**current, **value})
            elif isinstance(current, tuple):
                updates[key] = tuple(value)
            else:
                updates[key] = value
        return replace(base, **updates)

    @classmethod
    def load(cls, path: str | Path | None) -> Config:
        if path is None:
            return cls()
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: the alerts config must be a YAML mapping")
        return cls.from_mapping(data)
