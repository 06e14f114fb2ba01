"""The demo's public credentials: accepted only when the CLI runs with ``--demo``.

They are published in the docs on purpose (``make run`` must be tryable with
curl); :func:`with_demo_credentials` adds them to a config and never
replaces what the operator configured.
"""

from __future__ import annotations

import logging

from exporter.catalog import TIERS
from exporter.config import ApiKey, Config

log = logging.getLogger(__name__)

DEMO_SECRET = "clary-demo-secret-not-for-production"
DEMO_INGEST_TOKEN = "demo-ingest-token-not-a-secret"
DEMO_ADMIN_TOKEN = "demo-admin-token-not-a-secret"
DEMO_API_KEYS = {f"demo-{tier}-key": ApiKey(tier=tier, user=f"demo-{tier}-user") for tier in TIERS}
# Funnels the demo's sessions walk through (exporter.demo.traffic), where none is configured.
DEMO_FUNNELS = {"onboarding": ["login", "upload", "view", "export"], "collaboration": ["login", "search", "share"]}


def with_demo_credentials(config: Config) -> Config:
    """``config`` plus the demo API keys and ingest token; the demo HMAC secret, admin
    token and funnels only where none is configured."""
    changes: dict = {
        "api_keys": {**DEMO_API_KEYS, **config.api_keys},
        "ingest_tokens": [*config.ingest_tokens, DEMO_INGEST_TOKEN],
    }
    if not config.hmac_secret:
        log.warning("demo mode without a configured secret: using the fixed, public demo HMAC secret")
        changes["hmac_secret"] = DEMO_SECRET
    if not config.admin_token:
        changes["admin_token"] = DEMO_ADMIN_TOKEN
    if not config.funnels:
        changes["funnels"] = DEMO_FUNNELS
    return config.model_copy(update=changes)
