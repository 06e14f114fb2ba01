"""The SLO rows: target, SLI now, error budget left and burn rate, read from the SLO recording rules.

The panels read what ``alerts/groups/slo.py`` records (names from
:class:`mixin.slo.SloSeries`), so they show exactly the numbers the
burn-rate alerts act on, with the rules' guards (no traffic: no ratio, not
NaN). Recorded series have lost ``job`` and ``instance`` to aggregation;
they are filtered on ``$cluster`` only, and with several clusters selected a
tile shows the worst of them (lowest SLI and budget, highest burn rate).

- each tier's Performance dashboard: one line per SLO (availability,
  latency, document success) of four tiles;
- the Overview: one table per SLO, a line per tier.
"""

from __future__ import annotations

import attr

from exporter.catalog import TIERS
from exporter.promql import agg, recorded
from mixin.slo import DASHBOARD_WINDOW, PERIOD, SLO_NAMES, SLO_SERIES, SLO_TITLES

from . import thresholds
from .layout import Row
from .panels import stat, table
from .settings import current
from .targets import Q, table_q

TITLE = "Service level objectives"

GOOD = {
    "availability": "requests not answered with a 5xx status",
    "latency": "requests served within the tier's latency threshold",
    "documents": "documents processed without failure",
}


def _target_text(slo: str) -> str:
    cfg = current()
    if slo != "latency":
        return GOOD[slo]
    limits = ", ".join(f"{tier} {cfg.latency_p95_seconds[tier]:g} s" for tier in TIERS)
    return f"{GOOD[slo]} ({limits})"


def _queries(slo: str, tier: str | None = None) -> dict[str, str]:
    """Target, SLI, budget left and burn rate of ``slo``, for one tier or by tier."""
    names = SLO_SERIES[slo]
    t = {"tier": tier} if tier else {}
    by = () if tier else ("tier",)
    return {
        "target": agg(recorded(names.objective, **t), by, op="max"),
        "sli": agg(f"1 - {recorded(names.error_ratio(DASHBOARD_WINDOW), **t)}", by, op="min"),
        "budget": agg(recorded(names.budget_remaining, **t), by, op="min"),
        "burn": agg(recorded(names.burn_rate, **t), by, op="max"),
    }


def tier_slo_row(tier: str) -> Row:
    """Four tiles per SLO for one tier."""
    panels = []
    for slo in SLO_NAMES:
        name, q = SLO_TITLES[slo], _queries(slo, tier)
        good = _target_text(slo)
        panels += [
            stat(
                f"{name} target",
                f"The {slo} SLO of this tier: the share of {good} over {PERIOD} it promises "
                "(the config's target, as the rules record it).",
                "percentunit",
                Q(q["target"]),
                decimals=2,
                graph=False,
            ),
            stat(
                f"{name} SLI ({DASHBOARD_WINDOW})",
                f"The share of {good} over the last {DASHBOARD_WINDOW}; red below the target. "
                "No data while the tier has no traffic.",
                "percentunit",
                Q(q["sli"]),
                thresholds=thresholds.slo_target(slo, tier),
                decimals=3,
            ),
            stat(
                f"{name} budget left ({PERIOD})",
                f"Share of the {PERIOD} error budget (1 - target) not yet spent: 100 % untouched, "
                "0 spent, below 0 overspent (the SLO is broken for the period).",
                "percentunit",
                Q(q["budget"]),
                thresholds=thresholds.budget_left(),
                decimals=1,
            ),
            stat(
                f"{name} burn rate ({DASHBOARD_WINDOW})",
                f"How fast the budget burns over the last {DASHBOARD_WINDOW}: 1 spends it exactly in {PERIOD}. "
                f"ClaryErrorBudgetBurn pages at {thresholds.PAGE_BURN:g} (1h and 5m) and opens a ticket "
                f"from {thresholds.TICKET_BURN:g} (3d and 6h).",
                "short",
                Q(q["burn"]),
                thresholds=thresholds.burn_rate(),
                decimals=2,
            ),
        ]
    return Row(TITLE, panels)


def overview_slo_row() -> Row:
    """One table per SLO: a line per tier with target, SLI, budget left and burn rate."""
    columns = ("Target", f"SLI ({DASHBOARD_WINDOW})", f"Budget left ({PERIOD})", f"Burn rate ({DASHBOARD_WINDOW})")
    panels = []
    for slo in SLO_NAMES:
        q = _queries(slo)
        panel = table(
            f"{SLO_TITLES[slo]} SLO and error budget by tier",
            f"The {slo} SLO of each tier ({_target_text(slo)}): its target, the SLI over the last "
            f"{DASHBOARD_WINDOW}, the share of the {PERIOD} error budget left (below 0: overspent) and the "
            f"burn rate over {DASHBOARD_WINDOW} (1 spends the budget in {PERIOD}; a page from "
            f"{thresholds.PAGE_BURN:g}). From the SLO recording rules.",
            "percentunit",
            *(table_q(q[key]) for key in ("target", "sli", "budget", "burn")),
            columns=columns,
            sort_by="tier",
            w=8,
            h=6,
        )
        burn = {"matcher": {"id": "byName", "options": columns[3]},
                "properties": [{"id": "unit", "value": "short"},
                               {"id": "thresholds", "value": {"mode": "absolute", "steps": thresholds.burn_rate()}}]}
        budget = {"matcher": {"id": "byName", "options": columns[2]},
                  "properties": [{"id": "thresholds", "value": {"mode": "absolute", "steps": thresholds.budget_left()}}]}
        panels.append(attr.evolve(panel, overrides=[budget, burn]))
    return Row(TITLE, panels)
