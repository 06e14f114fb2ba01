"""The alert generator's view of the shared config: :mod:`mixin.config` and :mod:`mixin.slo`, re-exported.

The config moved to ``mixin/`` so that the dashboards read the same values
(one ``Config`` for rules and dashboards, one ``--config site.yml``); the
rule modules keep importing from here.
"""

from __future__ import annotations

from mixin.config import PLACEHOLDER_URL, RECEIVERS, SEVERITIES, TEAMS, TIERS, Config
from mixin.slo import (
    BURN_RATE_WINDOWS,
    SLO_NAMES,
    SLO_PERIOD_DAYS,
    SLO_SERIES,
    SLO_WINDOWS,
    BurnRateWindow,
    num,
    pct,
    seconds,
)

__all__ = [
    "BURN_RATE_WINDOWS",
    "PLACEHOLDER_URL",
    "RECEIVERS",
    "SEVERITIES",
    "SLO_NAMES",
    "SLO_PERIOD_DAYS",
    "SLO_SERIES",
    "SLO_WINDOWS",
    "TEAMS",
    "TIERS",
    "BurnRateWindow",
    "Config",
    "num",
    "pct",
    "seconds",
]
