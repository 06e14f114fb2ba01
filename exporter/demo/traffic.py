"""Bounded demo traffic over loopback against the demo API.

The first round calls every scenario once per tier, so every catalog family
has samples within seconds; after that scenarios are drawn by weight at a
fixed rate. Traffic only ever goes to the exporter's own loopback address,
is rate-limited, and stops by itself after ``duration`` or ``max_requests``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from exporter.catalog import DOC_TYPE, TIERS
from exporter.demo.api import LICENSES, LLM_MODELS, PLANS, REVOKED_LICENSE
from exporter.demo.feedback import demo_feedback, urgent_bug
from exporter.demo.workflows import DemoSessions

log = logging.getLogger(__name__)

USERS_PER_TIER = {"lite": 40, "standard": 120, "professional": 60}
ACTIONS = ("upload", "download", "view", "search", "export", "share", "annotate", "logout")
ALL_FEATURES = sorted({f for plan in PLANS.values() for f in plan.features})


@dataclass
class TrafficStats:
    sent: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    transport_errors: int = 0
    # Through the real ingestion API (exporter.instrument.client), when an ingest token is given.
    events_queued: int = 0
    feedback_stored: int = 0
    ingest_errors: int = 0


class DemoTraffic:
    """Issues demo requests to ``base_url`` (must be a loopback URL)."""

    def __init__(self, base_url: str, rate: float = 20.0, duration: float = 0.0,
                 max_requests: int = 0, rng: random.Random | None = None, ingest_token: str | None = None):
        if not base_url.startswith(("http://127.", "http://[::1]", "http://localhost")):
            raise ValueError("demo traffic only goes to a loopback address")
        self.base_url = base_url.rstrip("/")
        self.rate = rate
        self.duration = duration
        self.max_requests = max_requests
        self.rng = rng or random.Random()
        self.stats = TrafficStats()
        self.licenses = {tier: [k for k, (t, _) in LICENSES.items() if t == tier] for tier in TIERS}
        # Also report like an external component: batched events and stored feedback through
        # /api/v1/ with the real client, one item per INGEST_EVERY demo requests (bounded with them).
        self.ingest_token = ingest_token
        self.sessions = DemoSessions(self.rng)  # ordered actions of interleaved sessions

    # --- scenarios: each returns (method, path, json body) -------------------

    def _document(self, tier):
        features = self.rng.sample(ALL_FEATURES, self.rng.randint(1, 6))
        template = self.rng.choice((None, "builtin", "custom"))
        return "POST", "/documents", {"doc_type": self.rng.choice(DOC_TYPE.values + ("fax",)),
                                      "features": features, "template": template}

    def _get_document(self, tier):
        prefix = "missing" if self.rng.random() < 0.1 else "doc"
        return "GET", f"/documents/{prefix}-{self.rng.randrange(10**6)}", None

    def _inference(self, tier):
        return "POST", "/inference", {"model": self.rng.choice(PLANS[tier].models + ("layout-base",))}

    def _llm(self, tier):
        provider = self.rng.choice(sorted(LLM_MODELS))
        return "POST", "/llm", {"provider": provider, "model": self.rng.choice(LLM_MODELS[provider])}

    def _license(self, tier):
        roll = self.rng.random()
        key = REVOKED_LICENSE if roll < 0.02 else "NOT-A-LICENSE" if roll < 0.05 else self.rng.choice(self.licenses[tier])
        return "POST", "/licenses/validate", {"license": key}

    def _feedback(self, tier):
        return "POST", "/feedback", demo_feedback(self.rng, PLANS[tier].features)

    def _user(self, tier):
        return f"{tier}-user-{self.rng.randrange(USERS_PER_TIER[tier])}"

    def _session(self, tier):
        return "POST", "/sessions", {"user": self._user(tier), "duration": self.rng.lognormvariate(6.5, 1.0)}

    def _action(self, tier):
        return "POST", "/actions", {"user": self._user(tier), "action": self.rng.choice(ACTIONS)}

    def _workflow(self, tier):
        path, body = self.sessions.advance(tier, self._user(tier))
        return "POST", path, body

    def _boom(self, tier):
        return "GET", "/boom", None

    def _urgent_bug(self, tier):
        return "POST", "/feedback", urgent_bug(PLANS[tier].features)

    def _too_many_features(self, tier):
        plan = PLANS[tier]
        return "POST", "/documents", {"doc_type": "pdf", "features": list(plan.features[: plan.features_per_document + 1])}

    def scenarios(self) -> list[tuple[Callable, float]]:
        return [
            (self._document, 30), (self._get_document, 10), (self._inference, 15), (self._llm, 8),
            (self._license, 10), (self._feedback, 4), (self._session, 5), (self._action, 5), (self._workflow, 15),
            (self._boom, 0.5),
        ]

    # --- the real ingestion API ---------------------------------------------------

    INGEST_EVERY = 5
    FEEDBACK_EVERY = 50

    def _worker_event(self, tier: str) -> dict:
        """An event as a worker or the license server would send it."""
        roll = self.rng.random()
        if roll < 0.4:
            return {"type": "queue_length", "queue": self.rng.choice(("ingest", "export")),
                    "length": self.rng.randrange(0, 40)}
        if roll < 0.7:
            return {"type": "api_call", "tier": tier, "method": "POST", "route": "/api/v1/exports",
                    "code": self.rng.choice((200, 200, 200, 202, 400, 503)),
                    "duration_seconds": self.rng.lognormvariate(-2.5, 0.8)}
        if roll < 0.9:
            return {"type": "user_action", "tier": tier, "action": self.rng.choice(ACTIONS),
                    "user_id": self._user(tier)}
        return {"type": "template_used", "tier": tier, "kind": self.rng.choice(("builtin", "custom"))}

    async def _ingest(self, client, tier: str) -> None:
        from exporter.instrument.client import IngestError

        try:
            if self.stats.sent % self.FEEDBACK_EVERY == 0:
                _, _, body = self._feedback(tier)
                await client.feedback(f"demo-{tier}-key", body["type"], body["rating"], body["text"],
                                      {"source": "demo"}, feature=body.get("feature"))
                self.stats.feedback_stored += 1
            else:
                await client.send(self._worker_event(tier))
                self.stats.events_queued += 1
        except IngestError as exc:
            self.stats.ingest_errors += 1
            log.debug("demo ingestion failed: %s", exc)

    # --- driver ----------------------------------------------------------------

    async def _send(self, session: aiohttp.ClientSession, tier: str, scenario: Callable,
                    api_key: str | None = None) -> None:
        method, path, body = scenario(tier)
        headers = {"X-API-Key": api_key or f"demo-{tier}-key"}
        try:
            async with session.request(method, f"{self.base_url}/demo/api/v1{path}", json=body, headers=headers) as resp:
                await resp.read()
                self.stats.by_status[resp.status] = self.stats.by_status.get(resp.status, 0) + 1
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.stats.transport_errors += 1
            log.debug("demo request failed: %s", exc)
        self.stats.sent += 1

    def _done(self, started: float) -> bool:
        if self.max_requests and self.stats.sent >= self.max_requests:
            return True
        return bool(self.duration) and time.monotonic() - started >= self.duration

    async def run(self) -> TrafficStats:
        started = time.monotonic()
        scenarios = self.scenarios()
        funcs, weights = zip(*scenarios)
        timeout = aiohttp.ClientTimeout(total=10)
        client = None
        if self.ingest_token:
            from exporter.instrument.client import EventClient

            client = EventClient(self.base_url, self.ingest_token, batch_size=20, flush_interval=2.0, retries=1)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                await asyncio.gather(*(self._send(session, tier, f) for tier in TIERS for f in funcs))
                await self._send(session, "lite", self._action, api_key="not-a-demo-key")  # tier "unknown"
                # Rare, alert-worthy paths once up front, so their series move from the start too.
                await self._send(session, "standard", self._urgent_bug)
                await self._send(session, "standard", self._too_many_features)  # features quota
                for tier in TIERS:  # one whole session per tier: every funnel step has data from the start
                    for path, body in self.sessions.happy_path(self._user(tier)):
                        await self._send(session, tier, lambda _tier, path=path, body=body: ("POST", path, body))
                interval = 1.0 / self.rate
                while not self._done(started):
                    tier = self.rng.choices(TIERS, (5, 3, 2))[0]
                    await self._send(session, tier, self.rng.choices(funcs, weights)[0])
                    if client is not None and self.stats.sent % self.INGEST_EVERY == 0:
                        await self._ingest(client, tier)
                    await asyncio.sleep(interval)
        except asyncio.CancelledError:
            if client is not None:
                await client.close(flush=False)  # shutting down: no new requests
            raise
        if client is not None:
            try:
                await client.close()
            except Exception as exc:  # noqa: BLE001 - the demo must end cleanly whatever the exporter says
                self.stats.ingest_errors += 1
                log.debug("demo ingestion flush failed: %s", exc)
        log.info("demo traffic finished", extra={"fields": {"sent": self.stats.sent}})
        return self.stats

