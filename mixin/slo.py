"""The SLOs both generators share: the period, the burn-rate table, and the recorded series' names.

Three SLOs per tier, each "the share of good events" with a per-tier target
in :class:`mixin.config.Config`:

- ``availability``: HTTP requests not answered 5xx;
- ``latency``: HTTP requests served within the tier's latency threshold,
  read from the request-duration histogram's bucket at that threshold;
- ``documents``: documents processed without failure.

The rule generator (``alerts/groups/slo.py``) records the series named here
and the dashboards' SLO rows read them, so the two cannot drift apart: a
name is typed once, in :class:`SloSeries`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SLO_NAMES: tuple[str, ...] = ("availability", "latency", "documents")

SLO_TITLES = {
    "availability": "Availability",
    "latency": "Latency",
    "documents": "Document success",
}

SLO_PERIOD_DAYS = 30

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


# The multiwindow, multi-burn-rate table (Google SRE workbook, chapter 5).
BURN_RATE_WINDOWS: tuple[BurnRateWindow, ...] = (
    # page: 2 % of the 30-day budget in 1 hour, or 5 % in 6 hours
    BurnRateWindow("critical", "1h", "5m", 14.4, "2m"),
    BurnRateWindow("critical", "6h", "30m", 6, "5m"),
    # ticket: 10 % of the budget in 1 day, or 10 % in 3 days
    BurnRateWindow("warning", "1d", "2h", 3, "15m"),
    BurnRateWindow("warning", "3d", "6h", 1, "30m"),
)

# Every window some burn-rate alert reads, shortest first: 5m 30m 1h 2h 6h 1d 3d.
SLO_WINDOWS: tuple[str, ...] = tuple(sorted({w for b in BURN_RATE_WINDOWS for w in (b.long, b.short)}, key=seconds))

# The window of the "SLI now" and "burn rate" the dashboards show.
DASHBOARD_WINDOW = "1h"
PERIOD = f"{SLO_PERIOD_DAYS}d"


@dataclass(frozen=True)
class SloSeries:
    """The recorded series of one SLO, all ``tier:...`` (plus the cluster label)."""

    slo: str

    def __post_init__(self) -> None:
        if self.slo not in SLO_NAMES:
            raise ValueError(f"unknown SLO {self.slo!r}; known: {list(SLO_NAMES)}")

    @property
    def _stem(self) -> str:
        return f"clary_slo_{self.slo}"

    def events(self, window: str) -> str:
        """Events per second over ``window`` (requests, documents)."""
        return f"tier:{self._stem}_events:rate{window}"

    def errors(self, window: str) -> str:
        """Bad events per second; 0 (not absent) while the tier has events."""
        return f"tier:{self._stem}_errors:rate{window}"

    def error_ratio(self, window: str) -> str:
        """Bad / all events; absent (not NaN) while the tier has none. ``PERIOD`` is the 30-day one."""
        return f"tier:{self._stem}_errors_per_event:ratio_rate{window}"

    @property
    def objective(self) -> str:
        """The target, one series per tier (0.995)."""
        return f"tier:{self._stem}_objective:ratio"

    @property
    def budget_remaining(self) -> str:
        """Share of the period's error budget left: 1 untouched, 0 spent, below 0 overspent."""
        return f"tier:{self._stem}_error_budget_remaining:ratio{PERIOD}"

    @property
    def burn_rate(self) -> str:
        """Error ratio over ``DASHBOARD_WINDOW`` divided by the budget: 1 spends it exactly in the period."""
        return f"tier:{self._stem}_burn_rate:ratio_rate{DASHBOARD_WINDOW}"


SLO_SERIES = {name: SloSeries(name) for name in SLO_NAMES}
