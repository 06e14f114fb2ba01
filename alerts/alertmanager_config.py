"""Alertmanager routing, inhibitions and receivers, built from :class:`alerts.config.Config`.

Routing is by team first, then by severity: an alert of a team with its own
receivers (``Config.team_receivers``: support, licensing) goes there whatever
its severity, so a licensing ticket never reaches the SRE pager; everything
else goes by severity (critical pages, warning is a ticket, info a chat
message). Where each receiver sends its notifications (webhook URLs,
PagerDuty, Slack, ...) comes from the site config, so secrets and endpoints
stay outside git.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import RECEIVERS, Config

__all__ = ["RECEIVERS", "alertmanager_config"]

# group_wait, group_interval, repeat_interval.
TICKET_TIMING = ("1m", "10m", "24h")
# Urgent bug reports are answered within hours: notify fast, repeat every 4h.
TEAM_TIMINGS = {"support": ("10s", "5m", "4h")}


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
    ]
    # By team, before severity: each team's alerts reach its receivers only (never the pager).
    for team, receivers in cfg.team_receivers.items():
        wait, interval, repeat = TEAM_TIMINGS.get(team, TICKET_TIMING)
        extra: dict[str, Any] = {}
        if len(receivers) > 1:
            extra["routes"] = [{"receiver": r, "continue": True} for r in receivers[:-1]] + [{"receiver": receivers[-1]}]
        routes.append(route(receivers[0], f'team="{team}"', wait, interval, repeat, **extra))
    routes += [
        route("clary-oncall-pager", 'severity="critical"', "30s", "5m", "4h"),
        route("clary-ticket", 'severity="warning"', *TICKET_TIMING),
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
            "group_by": ["alertname", cfg.cluster_label, "tier"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "12h",
            "routes": routes,
        },
        "inhibit_rules": [
            # A critical alert silences the warning of the same alert on the same thing
            # (the same SLO: a latency page does not hide an availability ticket).
            {
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["alertname", "slo", "tier", "license", "instance", "gpu", "model", "job", cfg.cluster_label],
            },
            # Every replica down (critical, no instance label) covers each replica's own warning.
            {
                "source_matchers": ['alertname=~"ClaryExporterDown|ClaryServiceDown"', 'severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["alertname", "job", cfg.cluster_label],
            },
            # A paging burn rate already covers the tier's low-traffic ratio alert.
            {
                "source_matchers": ['alertname="ClaryErrorBudgetBurn"', 'slo="availability"', 'severity="critical"'],
                "target_matchers": ['alertname="ClaryHttpErrorSpike"'],
                "equal": ["tier", cfg.cluster_label],
            },
            {
                "source_matchers": ['alertname="ClaryErrorBudgetBurn"', 'slo="documents"', 'severity="critical"'],
                "target_matchers": ['alertname="ClaryDocumentFailureRatioHigh"'],
                "equal": ["tier", cfg.cluster_label],
            },
            # A model failing everything already covers its failure ratio.
            {
                "source_matchers": ['alertname="ClaryModelUnavailable"'],
                "target_matchers": ['alertname="ClaryInferenceFailureRatioHigh"'],
                "equal": ["model", cfg.cluster_label],
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
