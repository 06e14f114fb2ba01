"""clary-slo: the per-tier SLOs (availability, latency, document success) from one generator.

Each SLO is "good events / all events" per tier, with a per-tier target in
:class:`mixin.config.Config`. For every SLO the generator writes the same
set, under the names :class:`mixin.slo.SloSeries` gives (the dashboards'
SLO rows read them):

- events, errors and the error ratio at every burn-rate window (5m .. 3d);
- the error ratio over the 30-day period, from the 5m rates (traffic-weighted,
  no 30-day range over raw series), the target as a series, the error budget
  left over the period and the burn rate over 1h;
- ``ClaryErrorBudgetBurn{slo=...}``: the multiwindow multi-burn-rate alerts
  of :data:`mixin.slo.BURN_RATE_WINDOWS`, paging (critical) and ticket
  (warning), each needing some events in its short window.

An SLO is defined only by how its events and errors are counted
(:func:`_events`, :func:`_errors`); everything else is shared.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.utils import floatToGoString

from exporter.promql import agg, m, on, rate, regex

from ..config import (
    BURN_RATE_WINDOWS,
    SLO_NAMES,
    SLO_PERIOD_DAYS,
    SLO_SERIES,
    SLO_WINDOWS,
    TIERS,
    Config,
    num,
    pct,
    seconds,
)
from .common import RuleGroup, rate_or_zero, ratio, sum_rate_over

REQUESTS = m("clary_http_requests_total")
DURATION = m("clary_http_request_duration_seconds")
DOCUMENTS = m("clary_documents_processed_total")

WHAT = {
    "availability": ("requests", "answered HTTP 5xx", "of requests not answered with a 5xx status"),
    "latency": ("requests", "were slower than the tier latency threshold", "of requests served within the tier latency threshold"),
    "documents": ("documents", "failed", "of documents processed without failure"),
}


def le_matcher(bound: float):
    """``le`` as both exposition formats write it: ``1.0`` (prometheus_client, Prometheus 2) and ``1`` (Prometheus 3)."""
    forms = sorted({num(bound), floatToGoString(bound)}, key=len)
    return forms[0] if len(forms) == 1 else regex("|".join(f.replace(".", "\\.") for f in forms))


def latency_good(cfg: Config, window: str) -> str:
    """Requests per second within each tier's threshold: its bucket, or two interpolated (see Config.latency_buckets)."""
    parts = []
    for tier in TIERS:
        terms = []
        for bound, weight in cfg.latency_buckets(tier):
            bucket = agg(rate(DURATION.bucket(tier=tier, le=le_matcher(bound)), window), DURATION.grouping(("tier",), "bucket"))
            terms.append(bucket if weight == 1 else f"{num(weight)} * {bucket}")
        parts.append(" + ".join(terms) if len(terms) == 1 else "(" + " + ".join(terms) + ")")
    return "\nor\n".join(parts)


def _events(slo: str, window: str) -> str:
    """Events per second of ``slo`` over ``window``: requests (by the histogram's count for latency) or documents."""
    if slo == "latency":
        return agg(rate(DURATION.count(), window), DURATION.grouping(("tier",), "count"))
    return sum_rate_over(DOCUMENTS if slo == "documents" else REQUESTS, window, ("tier",))


def _errors(slo: str, cfg: Config, window: str, events: str) -> str:
    """Bad events per second of ``slo``; ``events`` is the recorded events series (0 errors, not absent, beside it)."""
    if slo == "availability":
        return rate_or_zero(sum_rate_over(REQUESTS, window, ("tier",), code=regex("5..")), events)
    if slo == "latency":
        # every request minus the fast ones; clamped: count and buckets are scraped alike, but rate() extrapolates each
        return f"clamp_min(\n{events}\n-\n(\n{latency_good(cfg, window)}\n),\n0)"
    return rate_or_zero(sum_rate_over(DOCUMENTS, window, ("tier",), outcome="failure"), events)


def _objective(targets) -> str:
    return "\nor\n".join(f'label_replace(vector({num(targets[tier])}), "tier", "{tier}", "", "")' for tier in TIERS)


def _per_budget(g: RuleGroup, ratio_name: str, objective: str) -> str:
    """An error ratio divided by its tier's budget: the burn rate (1 = the budget lasts exactly the period)."""
    return f"{g.series(ratio_name)}\n/ on (tier) group_left ()\n(1 - {g.series(objective)})"


def add_slo(g: RuleGroup, slo: str) -> None:
    """Record SLO ``slo`` and append its burn-rate alerts to ``g``."""
    cfg, names = g.cfg, SLO_SERIES[slo]
    for w in SLO_WINDOWS:
        events = g.record(names.events(w), _events(slo, w))
        errors = g.record(names.errors(w), _errors(slo, cfg, w, g.series(events)))
        g.record(names.error_ratio(w), ratio(errors, events))
    period = f"{SLO_PERIOD_DAYS}d"
    g.record(
        names.error_ratio(period),
        ratio(f"sum_over_time({g.series(names.errors('5m'))}[{period}])",
              f"sum_over_time({g.series(names.events('5m'))}[{period}])"),
    )
    objective = g.record(names.objective, _objective(cfg.slo_targets(slo)))
    g.record(names.budget_remaining, f"1 - (\n{_per_budget(g, names.error_ratio(period), objective)}\n)")
    g.record(names.burn_rate, _per_budget(g, names.error_ratio("1h"), objective))

    unit, bad_words, good_words = WHAT[slo]
    targets = ", ".join(f"{tier} {pct(target)}" for tier, target in cfg.slo_targets(slo).items())
    for b in BURN_RATE_WINDOWS:
        g.alert(
            "ClaryErrorBudgetBurn",
            "\n".join((
                f"(\n{_per_budget(g, names.error_ratio(b.long), objective)}\n) > {num(b.factor)}",
                f"and {on('tier')}",
                f"(\n{_per_budget(g, names.error_ratio(b.short), objective)}\n) > {num(b.factor)}",
                f"and {on('tier')}",
                f"{g.series(names.events(b.short))} * {seconds(b.short)} >= {cfg.burn_rate_min_events}",
            )),
            severity=b.severity,
            team="sre",
            for_=b.for_,
            labels={"slo": slo, "long_window": b.long, "short_window": b.short},
            summary=(f"Tier {{{{ $labels.tier }}}} is burning its {slo} error budget "
                     f"{{{{ $value | printf \"%.3g\" }}}}x too fast ({b.long}/{b.short})."),
            description=(
                f"Over the last {b.long} the {unit} of tier {{{{ $labels.tier }}}} {bad_words} at "
                f"{{{{ $value | printf \"%.3g\" }}}}x the rate its {slo} SLO allows, and the last {b.short} is "
                f"above {num(b.factor)}x too (SLO: {targets} {good_words}, over {SLO_PERIOD_DAYS} days). "
                f"Left alone, the {SLO_PERIOD_DAYS}-day budget is gone in {SLO_PERIOD_DAYS / b.factor:.3g} days."
            ),
        )


def slo_group(cfg: Config) -> dict[str, Any]:
    g = RuleGroup("clary-slo", cfg)
    for slo in SLO_NAMES:
        add_slo(g, slo)
    return g.build()
