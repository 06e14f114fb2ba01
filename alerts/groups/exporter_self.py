"""clary-exporter: the exporter watched from outside (up, absent target) and its collectors."""

from __future__ import annotations

from typing import Any

from exporter.promql import increase, m, over_time, up

from ..config import Config
from .common import RuleGroup

COLLECTOR_UP = m("clary_exporter_collector_up")
COLLECTOR_ERRORS = m("clary_exporter_collector_errors_total")


def exporter_group(cfg: Config) -> dict[str, Any]:
    g = RuleGroup("clary-exporter", cfg)
    target = up(job=cfg.exporter_job)
    collector_up = COLLECTOR_UP.sel()
    errors = increase(COLLECTOR_ERRORS.sel(), "15m")
    # Both families must carry the labels the two sides are matched on.
    on = ", ".join(COLLECTOR_ERRORS.grouping(COLLECTOR_UP.grouping(("job", "instance", "collector"))))
    g.alert(
        "ClaryExporterCollectorFailing",
        # up == 0 alone would fire on every GPU-less machine (absent
        # hardware reports up 0 without an error): require failures, or
        # a collector that worked within the last day and stopped.
        f"""
        {errors}
        and on ({on})
        ({collector_up} == 0)
        and on ({on})
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
    g.alert(
        "ClaryExporterDown",
        f"{target} == 0",
        severity="critical",
        team="sre",
        for_="5m",
        summary="Clary exporter {{ $labels.instance }} is down.",
        description=(
            "Prometheus has failed to scrape {{ $labels.instance }} (job {{ $labels.job }}) for 5 minutes: "
            "usage, license and error metrics from it are missing and alerts on them cannot fire."
        ),
    )
    g.alert(
        "ClaryExporterAbsent",
        f"absent({target})",
        severity="critical",
        team="sre",
        for_="10m",
        summary=f"No Clary exporter target in job {cfg.exporter_job}.",
        description=(
            f"Prometheus has had no target for job {cfg.exporter_job} for 10 minutes: service discovery or the "
            "scrape config lost the exporter, and every Clary alert is blind."
        ),
    )
    return g.build()
