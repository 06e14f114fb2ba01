"""Alertmanager routing, inhibitions and receivers, built from :class:`alerts.config.Config`.

Routing (who is paged for what) is fixed here; where each receiver sends
its notifications (webhook URLs, PagerDuty, Slack, ...) comes from the site
config, so secrets and endpoints stay outside git.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import RECEIVERS, Config

__all__ = ["RECEIVERS", "alertmanager_config"]


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
