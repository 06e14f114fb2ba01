"""Generate Clary's Prometheus rules and Alertmanager config from a small config.

The monitoring-mixin way: the thresholds live in :class:`Config`, the
burn-rate windows in :data:`BURN_RATE_WINDOWS`, and this module turns them
into ``alerts/rules/*.yml`` and ``alerts/alertmanager.yml``. The output is
deterministic and committed; ``tests/test_alerts_generate.py`` fails when the
committed files differ from what this module produces.

    .venv/bin/python -m alerts.generate                     # rewrite alerts/
    .venv/bin/python -m alerts.generate --check             # exit 1 on drift
    .venv/bin/python -m alerts.generate --config site.yml --output-dir /etc/clary
    .venv/bin/python -m alerts.generate --slo-target 0.999 --output-dir out/

``--config`` takes a YAML mapping with any subset of :class:`Config`'s
fields (unknown keys are rejected). Webhook URLs and native receiver
integrations for a real deployment go there, outside git.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from exporter.catalog import TIERS

PACKAGE_DIR = Path(__file__).resolve().parent
RULES_DIR = "rules"
ALERTMANAGER_FILE = "alertmanager.yml"
REGENERATE_HINT = "cd /work/main && .venv/bin/python -m alerts.generate"

SEVERITIES = ("critical", "warning", "info")

# --------------------------------------------------------------------------
# Durations


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def seconds(duration: str) -> int:
    """``"5m"`` -> 300. Only the single-unit forms used in this module."""
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

LICENSE_WINDOWS: tuple[str, ...] = ("5m", "30m", "1h")
INFERENCE_LEVELS: tuple[tuple[str, ...], ...] = (("tier", "model"), ("tier",), ("model",))

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


# --------------------------------------------------------------------------
# Rule builders


def _expr(text: str) -> str:
    """Multi-line PromQL as written in this module, without the indentation."""
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line)
    return "\n".join(line[indent:] for line in lines)


def record(name: str, expr: str) -> dict[str, Any]:
    return {"record": name, "expr": _expr(expr)}


def alert(
    cfg: Config,
    name: str,
    expr: str,
    *,
    severity: str,
    team: str,
    summary: str,
    description: str,
    for_: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    if severity not in SEVERITIES:
        raise ValueError(f"{name}: unknown severity {severity}")
    rule: dict[str, Any] = {"alert": name, "expr": _expr(expr)}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity, "team": team, **(labels or {})}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": f"{cfg.runbook_base_url}#{name.lower()}",
    }
    return rule


def rate_or_zero(expr_rate: str, fallback: str) -> str:
    """A filtered rate that reads 0 (not "no data") while the unfiltered traffic exists."""
    return f"{expr_rate}\nor\n0 * {fallback}"


def ratio(numerator: str, denominator: str) -> str:
    """numerator / denominator, absent (not NaN or +Inf) when the denominator is 0."""
    return f"{numerator}\n/\n({denominator} > 0)"


def quantile_name(q: float) -> str:
    """0.95 -> p95, 0.999 -> p999."""
    return "p" + num(q * 100).replace(".", "")


def tier_regex() -> str:
    return "|".join(TIERS)


# --------------------------------------------------------------------------
# Groups


def http_group(cfg: Config) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    for w in SLO_WINDOWS:
        requests, errors = f"tier:clary_http_requests:rate{w}", f"tier:clary_http_errors:rate{w}"
        rules += [
            record(requests, f"sum by (tier) (rate(clary_http_requests_total[{w}]))"),
            record(errors, rate_or_zero(f'sum by (tier) (rate(clary_http_requests_total{{code=~"5.."}}[{w}]))', requests)),
            record(f"tier:clary_http_errors_per_request:ratio_rate{w}", ratio(errors, requests)),
        ]
    buckets = "tier_le:clary_http_request_duration_seconds_bucket:rate5m"
    rules.append(record(buckets, "sum by (tier, le) (rate(clary_http_request_duration_seconds_bucket[5m]))"))
    for q in cfg.quantiles:
        rules.append(
            record(f"tier:clary_http_request_duration_seconds:{quantile_name(q)}_rate5m", f"histogram_quantile({num(q)}, {buckets})")
        )

    budget = cfg.error_budget
    slo = pct(cfg.slo_target)
    for b in BURN_RATE_WINDOWS:
        threshold = f"({num(b.factor)} * {num(budget)})"
        short_seconds = seconds(b.short)
        rules.append(
            alert(
                cfg,
                "ClaryErrorBudgetBurn",
                f"""
                tier:clary_http_errors_per_request:ratio_rate{b.long} > {threshold}
                and on (tier)
                tier:clary_http_errors_per_request:ratio_rate{b.short} > {threshold}
                and on (tier)
                tier:clary_http_requests:rate{b.short} * {short_seconds} >= {cfg.burn_rate_min_requests}
                """,
                severity=b.severity,
                team="sre",
                for_=b.for_,
                labels={"long_window": b.long, "short_window": b.short},
                summary=f"Tier {{{{ $labels.tier }}}} is burning its {slo} availability error budget {num(b.factor)}x too fast ({b.long}/{b.short}).",
                description=(
                    f"{{{{ $value | humanizePercentage }}}} of tier {{{{ $labels.tier }}}} requests answered HTTP 5xx over the last {b.long}, "
                    f"and the last {b.short} is above the threshold too: the error budget of the {slo} SLO burns "
                    f"at {num(b.factor)}x the sustainable rate (threshold {pct(b.factor * budget)}). "
                    f"Left alone, the {SLO_PERIOD_DAYS}-day budget is gone in {SLO_PERIOD_DAYS / b.factor:.3g} days."
                ),
            )
        )
    rules.append(
        alert(
            cfg,
            "ClaryHttpErrorSpike",
            f"""
            tier:clary_http_errors_per_request:ratio_rate30m > {num(cfg.error_spike_ratio)}
            and on (tier)
            tier:clary_http_errors:rate30m * 1800 >= {cfg.error_spike_min_errors}
            """,
            severity="warning",
            team="sre",
            for_="5m",
            summary="Tier {{ $labels.tier }} has a spike of HTTP 5xx errors.",
            description=(
                "{{ $value | humanizePercentage }} of tier {{ $labels.tier }} requests answered HTTP 5xx over the last 30m "
                f"(threshold {pct(cfg.error_spike_ratio)}, at least {cfg.error_spike_min_errors} errors). "
                "This catches low-traffic tiers, where burn-rate alerts need more requests than there are."
            ),
        )
    )
    for tier in TIERS:
        threshold = cfg.latency_p95_seconds[tier]
        rules.append(
            alert(
                cfg,
                "ClaryHttpLatencyHigh",
                f"""
                tier:clary_http_request_duration_seconds:p95_rate5m{{tier="{tier}"}} > {num(threshold)}
                and on (tier)
                tier:clary_http_requests:rate5m * 300 >= {cfg.latency_min_requests}
                """,
                severity="warning",
                team="sre",
                for_="10m",
                # One rule per tier (thresholds differ); the static label keeps promtool's lint
                # from reading three same-named rules as duplicates.
                labels={"tier": tier},
                summary="Tier {{ $labels.tier }} p95 HTTP latency is above its threshold.",
                description=(
                    "The p95 latency of tier {{ $labels.tier }} requests is {{ $value | humanizeDuration }} "
                    f"over the last 5m (threshold {num(threshold)}s)."
                ),
            )
        )
    return {"name": "clary-http", "rules": rules}


# Each group's alerts read only recording rules of their own group, recorded
# before them: groups run concurrently (and in no fixed order in promtool), a
# group runs its rules in order, so an alert always sees this evaluation's values.


def license_group(cfg: Config) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    for w in LICENSE_WINDOWS:
        validations = f"tier:clary_license_validations:rate{w}"
        failures = f"tier:clary_license_validation_failures:rate{w}"
        rules += [
            record(validations, f"sum by (tier) (rate(clary_license_validations_total[{w}]))"),
            record(failures, rate_or_zero(f'sum by (tier) (rate(clary_license_validations_total{{result!="valid"}}[{w}]))', validations)),
            record(f"tier:clary_license_validation_failures_per_validation:ratio_rate{w}", ratio(failures, validations)),
        ]
    expiry = "license_tier:clary_license_expiry_timestamp_seconds:max"
    usage = "license_tier_limit:clary_license_usage_per_limit:ratio"
    rules += [
        # Replicas may each report a license; the latest known expiry wins. 0 = unknown.
        record(expiry, "max by (license, tier) (clary_license_expiry_timestamp_seconds > 0)"),
        record(
            usage,
            ratio(
                "max by (license, tier, limit) (clary_license_usage)",
                "max by (license, tier, limit) (clary_license_limit)",
            ),
        ),
    ]
    rules += [
        alert(
            cfg,
            "ClaryLicenseValidationFailureRatioHigh",
            f"""
            tier:clary_license_validation_failures_per_validation:ratio_rate30m > {num(cfg.license_failure_ratio)}
            and on (tier)
            tier:clary_license_validations:rate30m * 1800 >= {cfg.license_failure_min_validations}
            """,
            severity="warning",
            team="licensing",
            for_="15m",
            summary="Tier {{ $labels.tier }} license validations fail too often.",
            description=(
                "{{ $value | humanizePercentage }} of tier {{ $labels.tier }} license validations failed over the last 30m "
                f"(threshold {pct(cfg.license_failure_ratio)}, at least {cfg.license_failure_min_validations} validations)."
            ),
        ),
        alert(
            cfg,
            "ClaryLicenseValidationFailureSpike",
            f"""
            tier:clary_license_validation_failures_per_validation:ratio_rate5m > {num(cfg.license_spike_ratio)}
            and on (tier)
            tier:clary_license_validation_failures:rate5m * 300 >= {cfg.license_spike_min_failures}
            """,
            severity="critical",
            team="licensing",
            for_="2m",
            summary="Tier {{ $labels.tier }} license validations are failing en masse.",
            description=(
                "{{ $value | humanizePercentage }} of tier {{ $labels.tier }} license validations failed over the last 5m "
                f"(threshold {pct(cfg.license_spike_ratio)}, at least {cfg.license_spike_min_failures} failures): "
                "paying customers are probably being locked out."
            ),
        ),
        alert(
            cfg,
            "ClaryLicenseValidationsStopped",
            f"""
            sum by (tier) (increase(clary_http_requests_total{{tier=~"{tier_regex()}"}}[1h])) >= {cfg.license_stopped_min_requests}
            unless on (tier)
            tier:clary_license_validations:rate1h > 0
            """,
            severity="warning",
            team="licensing",
            for_="15m",
            summary="Tier {{ $labels.tier }} serves traffic but validates no licenses.",
            description=(
                "Tier {{ $labels.tier }} served {{ $value | printf \"%.0f\" }} requests over the last hour "
                "without a single license validation: the license check is bypassed or not reporting."
            ),
        ),
    ]
    for severity, days in (("warning", cfg.license_expiry_warning_days), ("critical", cfg.license_expiry_critical_days)):
        rules.append(
            alert(
                cfg,
                "ClaryLicenseExpiring",
                f"""
                {expiry} - time() < {num(days * 86400)}
                and
                {expiry} - time() > 0
                """,
                severity=severity,
                team="licensing",
                for_="15m",
                summary=f"License {{{{ $labels.license }}}} ({{{{ $labels.tier }}}}) expires in less than {num(days)} days.",
                description=(
                    "License {{ $labels.license }} of tier {{ $labels.tier }} expires in {{ $value | humanizeDuration }} "
                    f"(alerting below {num(days)} days)."
                ),
            )
        )
    rules += [
        alert(
            cfg,
            "ClaryLicenseExpired",
            f"time() - {expiry} >= 0",
            severity="critical",
            team="licensing",
            for_="5m",
            summary="License {{ $labels.license }} ({{ $labels.tier }}) has expired.",
            description="License {{ $labels.license }} of tier {{ $labels.tier }} expired {{ $value | humanizeDuration }} ago.",
        ),
        alert(
            cfg,
            "ClaryLicenseUsageOverLimit",
            f"{usage} > 1",
            severity="warning",
            team="licensing",
            for_="15m",
            summary="License {{ $labels.license }} ({{ $labels.tier }}) is over its {{ $labels.limit }} limit.",
            description=(
                "License {{ $labels.license }} of tier {{ $labels.tier }} uses {{ $value | humanizePercentage }} "
                "of its {{ $labels.limit }} limit: a compliance issue for the account team."
            ),
        ),
        alert(
            cfg,
            "ClaryLicenseUsageNearLimit",
            f"""
            {usage} > {num(cfg.license_usage_near_ratio)}
            and
            {usage} <= 1
            """,
            severity="info",
            team="licensing",
            for_="30m",
            summary="License {{ $labels.license }} ({{ $labels.tier }}) is close to its {{ $labels.limit }} limit.",
            description=(
                "License {{ $labels.license }} of tier {{ $labels.tier }} uses {{ $value | humanizePercentage }} "
                f"of its {{{{ $labels.limit }}}} limit (informing above {pct(cfg.license_usage_near_ratio)}): an upsell conversation."
            ),
        ),
    ]
    return {"name": "clary-license", "rules": rules}


def inference_group(cfg: Config) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    base_requests = "tier_model:clary_inference_requests:rate5m"
    base_failures = "tier_model:clary_inference_failures:rate5m"
    for level in INFERENCE_LEVELS:
        prefix = "_".join(level)
        by = ", ".join(level)
        requests = f"{prefix}:clary_inference_requests:rate5m"
        failures = f"{prefix}:clary_inference_failures:rate5m"
        if requests == base_requests:
            rules += [
                record(requests, f"sum by ({by}) (rate(clary_inference_requests_total[5m]))"),
                record(
                    failures,
                    rate_or_zero(f'sum by ({by}) (rate(clary_inference_requests_total{{outcome="failure"}}[5m]))', requests),
                ),
            ]
        else:
            rules += [
                record(requests, f"sum by ({by}) ({base_requests})"),
                record(failures, f"sum by ({by}) ({base_failures})"),
            ]
        rules.append(record(f"{prefix}:clary_inference_failures_per_request:ratio_rate5m", ratio(failures, requests)))
    buckets = "model_le:clary_inference_duration_seconds_bucket:rate5m"
    rules.append(record(buckets, "sum by (model, le) (rate(clary_inference_duration_seconds_bucket[5m]))"))
    for q in cfg.quantiles:
        rules.append(record(f"model:clary_inference_duration_seconds:{quantile_name(q)}_rate5m", f"histogram_quantile({num(q)}, {buckets})"))

    guard = f"and on (model)\nmodel:clary_inference_requests:rate5m * 300 >= {cfg.inference_min_requests}"
    rules += [
        alert(
            cfg,
            "ClaryInferenceFailureRatioHigh",
            f"model:clary_inference_failures_per_request:ratio_rate5m > {num(cfg.inference_failure_ratio)}\n{guard}",
            severity="warning",
            team="ml",
            for_="10m",
            summary="Model {{ $labels.model }} fails too many inference requests.",
            description=(
                "{{ $value | humanizePercentage }} of inference requests to model {{ $labels.model }} failed over the last 5m "
                f"(threshold {pct(cfg.inference_failure_ratio)}, at least {cfg.inference_min_requests} requests)."
            ),
        ),
        alert(
            cfg,
            "ClaryModelUnavailable",
            f"model:clary_inference_failures_per_request:ratio_rate5m >= {num(cfg.model_unavailable_ratio)}\n{guard}",
            severity="critical",
            team="ml",
            for_="5m",
            summary="Model {{ $labels.model }} fails (nearly) every inference request: not loaded or failed to load.",
            description=(
                "{{ $value | humanizePercentage }} of inference requests to model {{ $labels.model }} failed over the last 5m "
                f"(threshold {pct(cfg.model_unavailable_ratio)}, at least {cfg.inference_min_requests} requests): "
                "the model is most likely not loaded (a failed load, an evicted or crashed worker)."
            ),
        ),
    ]
    return {"name": "clary-inference", "rules": rules}


def gpu_group(cfg: Config) -> dict[str, Any]:
    rules = [
        alert(
            cfg,
            "ClaryGpuTemperatureHigh",
            f"clary_gpu_temperature_celsius > {num(celsius)}",
            severity=severity,
            team="sre",
            for_=for_,
            summary="GPU {{ $labels.gpu }} on {{ $labels.instance }} runs hot.",
            description=(
                "GPU {{ $labels.gpu }} ({{ $labels.uuid }}) on {{ $labels.instance }} is at "
                f"{{{{ $value | printf \"%.0f\" }}}}°C (threshold {num(celsius)}°C)."
            ),
        )
        for severity, celsius, for_ in (
            ("warning", cfg.gpu_temperature_warning_celsius, "10m"),
            ("critical", cfg.gpu_temperature_critical_celsius, "5m"),
        )
    ]
    rules.append(
        alert(
            cfg,
            "ClaryGpuMemorySaturated",
            f"""
            clary_gpu_memory_used_bytes
            /
            (clary_gpu_memory_total_bytes > 0)
            > {num(cfg.gpu_memory_ratio)}
            """,
            severity="warning",
            team="sre",
            for_="15m",
            summary="GPU {{ $labels.gpu }} on {{ $labels.instance }} is almost out of memory.",
            description=(
                "GPU {{ $labels.gpu }} ({{ $labels.uuid }}) on {{ $labels.instance }} uses {{ $value | humanizePercentage }} "
                f"of its memory (threshold {pct(cfg.gpu_memory_ratio)}): model loads will fail."
            ),
        )
    )
    return {"name": "clary-gpu", "rules": rules}


def exporter_group(cfg: Config) -> dict[str, Any]:
    up = f'up{{job="{cfg.exporter_job}"}}'
    rules = [
        alert(
            cfg,
            "ClaryExporterCollectorFailing",
            # up == 0 alone would fire on every GPU-less machine (absent
            # hardware reports up 0 without an error): require failures, or
            # a collector that worked within the last day and stopped.
            """
            increase(clary_exporter_collector_errors_total[15m])
            and on (job, instance, collector)
            (clary_exporter_collector_up == 0)
            and on (job, instance, collector)
            (
              increase(clary_exporter_collector_errors_total[15m]) > 0
              or
              max_over_time(clary_exporter_collector_up[1d]) == 1
            )
            """,
            severity="warning",
            team="sre",
            for_="10m",
            summary="Collector {{ $labels.collector }} on {{ $labels.instance }} is failing.",
            description=(
                "Collector {{ $labels.collector }} on {{ $labels.instance }} reports up 0 and failed "
                "{{ $value | printf \"%.0f\" }} times in the last 15m (0: it worked within the last day and "
                "now finds no hardware). Its metrics are missing from the scrape."
            ),
        ),
        alert(
            cfg,
            "ClaryExporterDown",
            f"{up} == 0",
            severity="critical",
            team="sre",
            for_="5m",
            summary="Clary exporter {{ $labels.instance }} is down.",
            description=(
                "Prometheus has failed to scrape {{ $labels.instance }} (job {{ $labels.job }}) for 5 minutes: "
                "usage, license and error metrics from it are missing and alerts on them cannot fire."
            ),
        ),
        alert(
            cfg,
            "ClaryExporterAbsent",
            f"absent({up})",
            severity="critical",
            team="sre",
            for_="10m",
            summary=f"No Clary exporter target in job {cfg.exporter_job}.",
            description=(
                f"Prometheus has had no target for job {cfg.exporter_job} for 10 minutes: service discovery or the "
                "scrape config lost the exporter, and every Clary alert is blind."
            ),
        ),
    ]
    return {"name": "clary-exporter", "rules": rules}


def feedback_group(cfg: Config) -> dict[str, Any]:
    rules = [
        alert(
            cfg,
            "ClaryUrgentBugReport",
            "sum by (tier) (increase(clary_feedback_urgent_total[15m])) > 0",
            severity="warning",
            team="support",
            summary="Urgent bug report from tier {{ $labels.tier }}.",
            description=(
                "{{ $value | printf \"%.0f\" }} bug report(s) rated 2 or lower arrived from tier {{ $labels.tier }} "
                "in the last 15 minutes. Read them in the feedback store and answer the customer."
            ),
        )
    ]
    return {"name": "clary-feedback", "rules": rules}


def meta_group(cfg: Config) -> dict[str, Any]:
    rules = [
        alert(
            cfg,
            "Watchdog",
            "vector(1)",
            severity="info",
            team="sre",
            summary="Always firing: proves the alerting pipeline works end to end.",
            description=(
                "This alert always fires. Alertmanager sends it to the dead-man-switch receiver every minute; "
                "the external service pages when the pings stop, i.e. when Prometheus, Alertmanager or the "
                "path between them is broken."
            ),
        )
    ]
    return {"name": "clary-meta", "rules": rules}


RULE_FILES = {
    "clary-http.yml": (http_group,),
    "clary-license.yml": (license_group,),
    "clary-inference.yml": (inference_group,),
    "clary-infrastructure.yml": (gpu_group, exporter_group),
    "clary-feedback.yml": (feedback_group, meta_group),
}


# --------------------------------------------------------------------------
# Alertmanager


def alertmanager_config(cfg: Config) -> dict[str, Any]:
    def route(receiver: str, matcher: str, wait: str, interval: str, repeat: str, **extra: Any) -> dict[str, Any]:
        return {
            "receiver": receiver,
            "matchers": [matcher],
            "group_wait": wait,
            "group_interval": interval,
            "repeat_interval": repeat,
            **extra,
        }

    routes = [
        # The dead man's switch: pinged every minute, never grouped with anything.
        route("clary-deadmansswitch", 'alertname="Watchdog"', "0s", "1m", "1m", group_by=["alertname"]),
        # Urgent bug reports: support and development both, not the pager.
        route(
            "clary-support",
            'team="support"',
            "10s",
            "5m",
            "4h",
            routes=[{"receiver": "clary-support", "continue": True}, {"receiver": "clary-development"}],
        ),
        route("clary-oncall-pager", 'severity="critical"', "30s", "5m", "4h"),
        route("clary-ticket", 'severity="warning"', "1m", "10m", "24h"),
        route("clary-chat", 'severity="info"', "5m", "30m", "24h"),
    ]
    receivers = []
    for name in RECEIVERS:
        body = cfg.receiver_overrides.get(name)
        if body is None:
            body = {
                "webhook_configs": [
                    {"url": cfg.webhook_urls[name], "send_resolved": name != "clary-deadmansswitch"}
                ]
            }
        receivers.append({"name": name, **_plain(body)})
    return {
        "route": {
            "receiver": "clary-ticket",
            "group_by": ["alertname", "tier"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "12h",
            "routes": routes,
        },
        "inhibit_rules": [
            # A critical alert silences the warning of the same alert on the same thing.
            {
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["alertname", "tier", "license", "instance", "gpu", "model"],
            },
            # A paging burn rate already covers the tier's error spike.
            {
                "source_matchers": ['alertname="ClaryErrorBudgetBurn"', 'severity="critical"'],
                "target_matchers": ['alertname="ClaryHttpErrorSpike"'],
                "equal": ["tier"],
            },
            # A model failing everything already covers its failure ratio.
            {
                "source_matchers": ['alertname="ClaryModelUnavailable"'],
                "target_matchers": ['alertname="ClaryInferenceFailureRatioHigh"'],
                "equal": ["model"],
            },
        ],
        "receivers": receivers,
    }


def _plain(value: Any) -> Any:
    """MappingProxy/tuples -> dicts/lists, so YAML dumps them plainly."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------
# Rendering


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False):  # noqa: ARG002
        return super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, data: str):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000, default_flow_style=False)


def _header(cfg: Config, what: str) -> str:
    return (
        f"# {what}\n"
        "# GENERATED by `python -m alerts.generate` (alerts/generate.py); do not edit by hand.\n"
        f"# Availability SLO target: {num(cfg.slo_target)}. To change anything, see alerts/README.md.\n"
    )


def render(cfg: Config | None = None) -> dict[str, str]:
    """Every generated file, relative path -> text."""
    cfg = cfg or Config()
    out: dict[str, str] = {}
    for filename, builders in RULE_FILES.items():
        groups = [build(cfg) for build in builders]
        out[f"{RULES_DIR}/{filename}"] = _header(cfg, f"Prometheus rules: {', '.join(g['name'] for g in groups)}") + dump(
            {"groups": groups}
        )
    am_header = _header(cfg, "Alertmanager configuration for Clary AI (tested with Alertmanager 0.25).") + (
        "# Webhook URLs are placeholders (*.invalid never resolves): point them at real receivers\n"
        "# with `--config site.yml` (webhook_urls / receiver_overrides), see alerts/README.md.\n"
    )
    out[ALERTMANAGER_FILE] = am_header + dump(alertmanager_config(cfg))
    return out


def stale_files(output_dir: Path, rendered: Mapping[str, str]) -> list[str]:
    """Generated-looking rule files in ``output_dir`` that the generator no longer writes."""
    rules = output_dir / RULES_DIR
    if not rules.is_dir():
        return []
    return sorted(
        f"{RULES_DIR}/{p.name}" for p in rules.glob("*.yml") if f"{RULES_DIR}/{p.name}" not in rendered
    )


def check(output_dir: Path, rendered: Mapping[str, str]) -> list[str]:
    """Human-readable differences between ``rendered`` and the files on disk."""
    problems: list[str] = []
    for rel, text in rendered.items():
        path = output_dir / rel
        if not path.exists():
            problems.append(f"{rel}: missing")
            continue
        current = path.read_text()
        if current != text:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True), text.splitlines(keepends=True), f"{rel} (on disk)", f"{rel} (generated)"
            )
            problems.append("".join(list(diff)[:60]))
    problems += [f"{rel}: not generated any more" for rel in stale_files(output_dir, rendered)]
    return problems


def write(output_dir: Path, rendered: Mapping[str, str]) -> list[str]:
    changed = []
    for rel in stale_files(output_dir, rendered):
        (output_dir / rel).unlink()
        changed.append(f"removed {rel}")
    for rel, text in rendered.items():
        path = output_dir / rel
        if path.exists() and path.read_text() == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        changed.append(f"wrote {rel}")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alerts.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML file overriding Config fields (SLO target, thresholds, receivers)")
    parser.add_argument("--slo-target", type=float, help="availability SLO target, e.g. 0.999 (overrides --config)")
    parser.add_argument("--output-dir", type=Path, default=PACKAGE_DIR, help="default: the alerts/ package directory")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files differ")
    args = parser.parse_args(argv)
    try:
        cfg = Config.load(args.config)
        if args.slo_target is not None:
            cfg = replace(cfg, slo_target=args.slo_target)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rendered = render(cfg)
    if args.check:
        problems = check(args.output_dir, rendered)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            print(f"generated alert files are out of date; regenerate with: {REGENERATE_HINT}", file=sys.stderr)
            return 1
        print(f"{len(rendered)} generated files up to date in {args.output_dir}")
        return 0
    for line in write(args.output_dir, rendered) or ["nothing to do: files up to date"]:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
