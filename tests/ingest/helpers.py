"""Event batches for the ingestion tests, and the exporter's IngestApi as create_app wires it."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry

from exporter.api.app import INGEST as INGEST_KEY
from exporter.server.app import create_app
from tests.api_helpers import make_config, value

FEATURE_USED = {"type": "feature_used", "tier": "lite", "feature": "ocr"}
INFERENCE = {"type": "inference", "tier": "lite", "model": "ocr-fast", "duration_seconds": 0.5}
USES = dict(tier="lite", feature="ocr", outcome="success")


def body(*events: dict) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def events_total(registry, type_: str, outcome: str = "accepted") -> float:
    return value(registry, "clary_exporter_events_total", type=type_, outcome=outcome)


def make_api(tmp_path) -> tuple:
    """The exporter app's IngestApi (as create_app wires it) and its own registry."""
    registry = CollectorRegistry()
    app = create_app(make_config(tmp_path), registry)
    return app[INGEST_KEY], registry


def activity(api, user: str, kind: str, tier: str = "lite") -> int:
    """Per-user activity the API buffered for ``user`` (what the store gets on flush)."""
    hashed = api.recorder.hasher.digest(user)
    return sum(count for (who, _, t, k), count in api.activity.pending.items() if (who, t, k) == (hashed, tier, kind))
