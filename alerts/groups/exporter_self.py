"""clary-exporter: the exporter and the library-mode services watched from outside (up), its collectors and inputs.

Scrape targets: one replica down is a ticket after 15 minutes (the others
carry on, and a rolling restart must not page); every replica of the job
down, or no target at all, pages. The exporter's own inputs: label values
folded into ``other`` (an allow-list or series budget to fix) and events
rejected by validation (a sender sending bad events) are tickets. Its store
failing for 5 minutes pages: feedback and privacy requests are refused.
"""

from __future__ import annotations

from typing import Any

from exporter.promql import Matchers, agg, increase, m, on, over_time, selector

from ..config import Config, num, pct
from .common import RuleGroup, sum_increase_over, sum_rate_over

COLLECTOR_UP = m("clary_exporter_collector_up")
COLLECTOR_ERRORS = m("clary_exporter_collector_errors_total")
OVERFLOW = m("clary_exporter_label_overflow_total")
EVENTS = m("clary_exporter_events_total")
STORAGE_UP = m("clary_exporter_storage_up")


def down_alerts(g: RuleGroup, name: str, matchers: Matchers, what: str, *, absent: bool) -> None:
    """``name`` warning per target down 15m, critical when every target of the job is down (and, if asked, absent)."""
    target = selector("up", dict(matchers))
    job = dict(matchers)["job"]
    job = job if isinstance(job, str) else job.value
    g.alert(
        name,
        f"{target} == 0",
        severity="warning",
        team="sre",
        for_="15m",
        summary=f"{what} {{{{ $labels.instance }}}} is down.",
        description=(
            "Prometheus has failed to scrape {{ $labels.instance }} (job {{ $labels.job }}) for 15 minutes. "
            "The job's other replicas still serve; its metrics are missing until it is back."
        ),
    )
    g.alert(
        name,
        f"{agg(target, ('job',))} == 0",
        severity="critical",
        team="sre",
        for_="5m",
        summary=f"Every {what} replica of job {{{{ $labels.job }}}} is down.",
        description=(
            "Prometheus has scraped no target of job {{ $labels.job }} for 5 minutes: every replica is down, "
            "so their metrics are missing and the alerts on them cannot fire."
        ),
    )
    if absent:
        g.alert(
            f"{name.removesuffix('Down')}Absent",
            f"absent({target})",
            severity="critical",
            team="sre",
            for_="10m",
            summary=f"No {what} target in job {job}.",
            description=(
                f"Prometheus has had no target for job {job} for 10 minutes: service discovery or the "
                "scrape config lost it, and every Clary alert is blind."
            ),
        )


def exporter_group(cfg: Config) -> dict[str, Any]:
    g = RuleGroup("clary-exporter", cfg)
    collector_up = COLLECTOR_UP.sel()
    errors = increase(COLLECTOR_ERRORS.sel(), "15m")
    # Both families must carry the labels the two sides are matched on.
    labels = COLLECTOR_ERRORS.grouping(COLLECTOR_UP.grouping(("job", "instance", "collector")))
    g.alert(
        "ClaryExporterCollectorFailing",
        # up == 0 alone would fire on every GPU-less machine (absent
        # hardware reports up 0 without an error): require failures, or
        # a collector that worked within the last day and stopped.
        f"""
        {errors}
        and {on(*labels)}
        ({collector_up} == 0)
        and {on(*labels)}
        (
          {errors} > 0
          or
          {over_time("max", collector_up, "1d")} == 1
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
    )
    down_alerts(g, "ClaryExporterDown", cfg.selector_matchers, "Clary exporter", absent=True)
    # Library-mode services are optional: their absence is not an alert.
    down_alerts(g, "ClaryServiceDown", cfg.service_matchers, "Clary service", absent=False)
    g.alert(
        "ClaryExporterLabelOverflow",
        f"{sum_increase_over(OVERFLOW, '30m', ('metric', 'label'))} > 0",
        severity="warning",
        team="sre",
        for_="5m",
        summary="Values of label {{ $labels.label }} of {{ $labels.metric }} are folded into 'other'.",
        description=(
            "{{ $value | printf \"%.0f\" }} value(s) of label {{ $labels.label }} of {{ $labels.metric }} were replaced by "
            "'other' in the last 30m: the label's allow-list or the family's series budget is exhausted, and the "
            "panels split by that label now lump new values together."
        ),
    )
    g.alert(
        "ClaryExporterStorageFailing",
        f"{STORAGE_UP.sel()} == 0",
        severity="critical",
        team="sre",
        for_="5m",
        summary="The store of exporter {{ $labels.instance }} is failing.",
        description=(
            "{{ $labels.instance }} has reported clary_exporter_storage_up 0 for 5 minutes: its SQLite store "
            "(disk full, read-only, locked, or the file deleted) fails, so feedback and privacy requests get 503 "
            "and /readyz is 503. It re-checks every 5 s and recovers by itself once the disk works."
        ),
    )
    events = g.record("type:clary_exporter_events:rate15m", sum_rate_over(EVENTS, "15m", ("type",)))
    rejected, rejected_ratio = g.record_share(
        "type:clary_exporter_events_rejected:rate15m", "type:clary_exporter_events_rejected_per_event:ratio_rate15m",
        sum_rate_over(EVENTS, "15m", ("type",), outcome="rejected"), events)
    g.alert(
        "ClaryEventsRejected",
        f"""
        {g.series(rejected_ratio)} > {num(cfg.events_rejected_ratio)}
        and {on("type")}
        {g.series(rejected)} * 900 >= {cfg.events_rejected_min}
        """,
        severity="warning",
        team="sre",
        for_="10m",
        summary="The exporter rejects {{ $labels.type }} events.",
        description=(
            "{{ $value | humanizePercentage }} of the {{ $labels.type }} events sent to the events API over the last 15m "
            f"were rejected by validation (threshold {pct(cfg.events_rejected_ratio)}, at least {cfg.events_rejected_min} "
            "rejected): a sender sends events the schema refuses, and what they describe is not counted."
        ),
    )
    return g.build()
