"""Panel thresholds taken from the config values the alerts fire on.

Each function names the alert whose threshold it draws, so a panel turns red
where that alert fires and a site file (``--config``) moves both. Values are
read from :func:`dashboards.settings.current` when a panel is built.
"""

from __future__ import annotations

from typing import Any

from mixin.slo import BURN_RATE_WINDOWS

from .settings import current
from .styling import steps

Steps = list[dict[str, Any]]

# The burn-rate table's slowest (ticket) and fastest (page) factors: 1x and 14.4x.
TICKET_BURN = min(b.factor for b in BURN_RATE_WINDOWS)
PAGE_BURN = max(b.factor for b in BURN_RATE_WINDOWS)


def error_ratio(tier: str) -> Steps:
    """A tier's 5xx ratio: orange above its availability budget (1x burn), red at the 14.4x page."""
    budget = current().error_budget("availability", tier)
    return steps(("orange", budget * TICKET_BURN), ("red", budget * PAGE_BURN))


def error_ratio_line(tier: str) -> Steps:
    """The 14.4x page of ClaryErrorBudgetBurn (availability) as a line."""
    return steps(("red", current().error_budget("availability", tier) * PAGE_BURN))


def error_spike() -> Steps:
    """ClaryHttpErrorSpike: any tier's 5xx ratio."""
    return steps(("red", current().error_spike_ratio))


def latency(tier: str) -> Steps:
    """ClaryHttpLatencyHigh and the latency SLO: the tier's p95 threshold."""
    return steps(("red", current().latency_p95_seconds[tier]))


def document_failures() -> Steps:
    """ClaryDocumentFailureRatioHigh."""
    return steps(("red", current().document_failure_ratio))


def license_rejections() -> Steps:
    """ClaryLicenseValidationFailureRatioHigh (keys rejected; the failure panels include them)."""
    return steps(("red", current().license_failure_ratio))


def expiry_days() -> Steps:
    """Days to expiry: green beyond ClaryLicenseExpiring's 14 days, orange within, red once expired (0)."""
    return [
        {"color": "red", "value": None},
        {"color": "orange", "value": 1 / 86400},  # a second: anything not yet expired
        {"color": "green", "value": current().license_expiry_warning_days},
    ]


def compliance() -> Steps:
    """usage / limit: orange at ClaryLicenseUsageNearLimit (90 %), red at the limit (ClaryLicenseUsageOverLimit)."""
    return steps(("orange", current().license_usage_near_ratio), ("red", 1))


def inference_failures() -> Steps:
    """ClaryInferenceFailureRatioHigh."""
    return steps(("red", current().inference_failure_ratio))


def llm_failures() -> Steps:
    """ClaryLlmFailureRatioHigh."""
    return steps(("red", current().llm_failure_ratio))


def llm_latency() -> Steps:
    """ClaryLlmLatencyHigh."""
    return steps(("red", current().llm_latency_p95_seconds))


def queue_backlog() -> Steps:
    """ClaryQueueBacklog."""
    return steps(("red", current().queue_backlog_max))


def gpu_temperature() -> Steps:
    """ClaryGpuTemperatureHigh: warning and critical."""
    cfg = current()
    return steps(("orange", cfg.gpu_temperature_warning_celsius), ("red", cfg.gpu_temperature_critical_celsius))


def gpu_memory() -> Steps:
    """ClaryGpuMemorySaturated."""
    return steps(("red", current().gpu_memory_ratio))


def slo_target(slo: str, tier: str) -> Steps:
    """An SLI: red below the tier's target."""
    return [{"color": "red", "value": None}, {"color": "green", "value": current().slo_targets(slo)[tier]}]


def budget_left() -> Steps:
    """Error budget left over the period: red once overspent (below 0)."""
    return [{"color": "red", "value": None}, {"color": "green", "value": 0}]


def burn_rate() -> Steps:
    """Burn rate: orange from the slowest ticket factor (1x), red from the page factor (14.4x)."""
    return steps(("orange", TICKET_BURN), ("red", PAGE_BURN))
