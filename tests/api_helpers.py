"""Shared pieces of the ingestion/feedback API tests (exporter.api.app, store, notify, client).

Everything listens on 127.0.0.1 only and is stopped in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter.config import Config
from exporter.instrument.hashing import Hasher
from exporter.server.app import create_app
from exporter.store.database import Database
from tests import store_backend, support

SECRET = "test-hmac-secret-0123456789abcdef"
INGEST_TOKEN = "ingest-token-0123456789"
OTHER_INGEST_TOKEN = "ingest-token-second-abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
API_KEYS = {
    "key-lite-alice": {"tier": "lite", "user": "alice"},
    "key-pro-bob": {"tier": "professional", "user": "bob"},
    "key-std-carol": {"tier": "standard", "user": "carol"},
}
INGEST = {"Authorization": f"Bearer {INGEST_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
HASH = Hasher(SECRET).digest
"""How the exporter configured by ``make_config`` hashes a user id."""

# One valid example per event type, and the sample it must move (name, labels, delta).
EXAMPLES: dict[str, tuple[dict, tuple[str, dict, float]]] = {
    "document_processed": (
        {"type": "document_processed", "tier": "lite", "doc_type": "pdf", "outcome": "success",
         "duration_seconds": 1.5, "features": ["ocr", "classification"]},
        ("clary_documents_processed_total", {"tier": "lite", "doc_type": "pdf", "outcome": "success"}, 1)),
    "feature_used": (
        {"type": "feature_used", "tier": "standard", "feature": "translation", "outcome": "failure"},
        ("clary_feature_uses_total", {"tier": "standard", "feature": "translation", "outcome": "failure"}, 1)),
    "feature_blocked": (
        {"type": "feature_blocked", "tier": "lite", "feature": "llm_extraction"},
        ("clary_feature_blocked_total", {"tier": "lite", "feature": "llm_extraction"}, 1)),
    "quota_exceeded": (
        {"type": "quota_exceeded", "tier": "standard", "limit": "documents"},
        ("clary_quota_exceeded_total", {"tier": "standard", "limit": "documents"}, 1)),
    "template_used": (
        {"type": "template_used", "tier": "professional", "kind": "custom"},
        ("clary_template_uses_total", {"tier": "professional", "kind": "custom"}, 1)),
    "api_call": (
        {"type": "api_call", "tier": "professional", "method": "POST", "route": "/api/v1/exports/{id}",
         "code": 503, "duration_seconds": 0.2},
        ("clary_http_requests_total",
         {"tier": "professional", "method": "POST", "route": "/api/v1/exports/{id}", "code": "503"}, 1)),
    "inference": (
        {"type": "inference", "tier": "standard", "model": "ner-base", "duration_seconds": 0.05},
        ("clary_inference_requests_total", {"tier": "standard", "model": "ner-base", "outcome": "success"}, 1)),
    "model_load": (
        {"type": "model_load", "model": "layout-base", "duration_seconds": 12.0, "memory_bytes": 2.5e9},
        ("clary_model_memory_bytes", {"model": "layout-base"}, 2.5e9)),
    "queue_length": (
        {"type": "queue_length", "queue": "ocr", "length": 17},
        ("clary_queue_length", {"queue": "ocr"}, 17)),
    "llm_call": (
        {"type": "llm_call", "tier": "professional", "provider": "anthropic", "model": "claude-haiku",
         "duration_seconds": 3.0, "time_to_first_token_seconds": 0.4, "input_tokens": 1200, "output_tokens": 300},
        ("clary_llm_tokens_total",
         {"tier": "professional", "provider": "anthropic", "model": "claude-haiku", "direction": "input"}, 1200)),
    "license_validation": (
        {"type": "license_validation", "tier": "lite", "result": "expired", "duration_seconds": 0.01,
         "license_key": "LIC-0001"},
        ("clary_license_validations_total", {"tier": "lite", "result": "expired"}, 1)),
    "license_status": (
        {"type": "license_status", "tier": "standard", "license_key": "LIC-0002", "expires_at": 1893456000,
         "usage": {"documents": 420}, "limits": {"documents": 1000}},
        ("clary_license_limit", {"tier": "standard", "limit": "documents"}, 1000)),
    "user_action": (
        {"type": "user_action", "tier": "lite", "action": "export", "user_id": "dave"},
        ("clary_user_actions_total", {"tier": "lite", "action": "export"}, 1)),
    "session": (
        {"type": "session", "tier": "standard", "duration_seconds": 600, "user_id": "erin"},
        ("clary_session_duration_seconds_count", {"tier": "standard"}, 1)),
    "error": (  # stored and grouped (tests/api/test_error_groups.py); no metric of its own on arrival
        {"type": "error", "tier": "professional", "error_id": "0b7e4f9a-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
         "error_type": "ValueError", "route": "/api/v1/documents/{id}", "message": "bad page",
         "trace": "Traceback (most recent call last):\nValueError: bad page\n", "user_id": "frank"},
        ("clary_exporter_events_total", {"type": "error", "outcome": "accepted"}, 1)),
}


def make_config(data_dir: Path, **overrides) -> Config:
    base = dict(
        hmac_secret=SECRET, collectors={"system": False, "gpu": False}, data_dir=data_dir,
        ingest_tokens=[INGEST_TOKEN, OTHER_INGEST_TOKEN], admin_token=ADMIN_TOKEN, api_keys=API_KEYS,
    )
    base.update(overrides)
    return Config(**base)


async def app_client(aiohttp_client, data_dir: Path, registry: CollectorRegistry, **overrides):
    """The exporter app configured by ``make_config(data_dir, **overrides)``, and an aiohttp test client of it."""
    app = create_app(make_config(data_dir, **overrides), registry)
    return app, await aiohttp_client(app)


def value(registry: CollectorRegistry, name: str, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def sample(registry: CollectorRegistry, name: str, labels: dict) -> float:
    """A sample's value; labels may omit ones (the license id) that are summed over."""
    total = 0.0
    for family in registry.collect():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def clary_samples(registry: CollectorRegistry) -> dict[tuple, float]:
    """Every sample of the registry, for "nothing changed" comparisons."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect() for s in family.samples}


def database(data_dir: Path) -> Database:
    """The store of an exporter on ``data_dir``: its file, or its PostgreSQL database (tests/store_backend.py)."""
    return store_backend.database(data_dir)


class ThreadServer:
    """An aiohttp app served on 127.0.0.1 from a background thread (for sync callers)."""

    def __init__(self, app: web.Application, port: int | None = None):
        self.app = app
        self.port = port or support.free_port()
        self.url = f"http://{support.LOOPBACK}:{self.port}"
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> ThreadServer:
        self._thread.start()

        async def up():
            self._runner = web.AppRunner(self.app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, support.LOOPBACK, self.port).start()

        self.call(up())
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self.call(self._runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def thread_server(app: web.Application, port: int | None = None) -> Iterator[ThreadServer]:
    server = ThreadServer(app, port).start()
    try:
        yield server
    finally:
        server.stop()


class WebhookReceiver:
    """A local webhook endpoint that records what it receives; can go down and come back."""

    def __init__(self, port: int | None = None, status: int = 200):
        self.port = port or support.free_port()
        self.url = f"http://{support.LOOPBACK}:{self.port}/hook"
        self.status = status
        self.received: list[dict] = []
        self.headers: list[dict] = []
        self.arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        self.headers.append(dict(request.headers))
        self.arrived.set()
        return web.json_response({"ok": True}, status=self.status)

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, support.LOOPBACK, self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait(self, count: int = 1, timeout: float = 15) -> list[dict]:
        async def enough():
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), timeout)
        return self.received
