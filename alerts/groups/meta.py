"""clary-meta: the Watchdog, an always-firing alert that proves the pipeline end to end."""

from __future__ import annotations

from typing import Any

from ..config import Config
from .common import RuleGroup


def meta_group(cfg: Config) -> dict[str, Any]:
    g = RuleGroup("clary-meta", cfg)
    g.alert(
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
    return g.build()
