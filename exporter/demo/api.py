"""A small Clary-like API for demo mode, instrumented like a real service.

It simulates what Clary does per tier (feature gates, quotas, local models,
cloud LLMs for Professional, license checks, feedback, sessions) and reports
through ``instrument`` and the recording API, so every dashboard has data.
Durations are simulated; handlers only sleep a few milliseconds.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from exporter.instrument.aiohttp_middleware import IDENTITY, Identity, Resolver, instrument
from exporter.instrument import sentiment
from exporter.instrument.errors import expected
from exporter.instrument.recorder import Recorder

LOCAL_MODELS = ("layout-small", "layout-base", "ocr-fast", "ocr-accurate", "classifier-v2", "ner-base")
LLM_MODELS = {"openai": ("gpt-4o", "gpt-4o-mini"), "anthropic": ("claude-sonnet", "claude-haiku"), "google": ("gemini-pro",)}
BASIC_FEATURES = ("ocr", "classification")
ADVANCED_FEATURES = ("table_extraction", "entity_extraction", "summarization", "translation", "redaction", "handwriting")
ENTERPRISE_FEATURES = ("custom_templates", "llm_extraction", "signature_detection", "batch_processing", "sso", "audit_log")


class TierPlan(BaseModel):
    features: tuple[str, ...]
    models: tuple[str, ...]
    documents_per_minute: int
    features_per_document: int
    api_calls_per_minute: int


PLANS = {
    "lite": TierPlan(features=BASIC_FEATURES, models=("ocr-fast",), documents_per_minute=60,
                     features_per_document=2, api_calls_per_minute=240),
    "standard": TierPlan(features=BASIC_FEATURES + ADVANCED_FEATURES, models=LOCAL_MODELS,
                         documents_per_minute=300, features_per_document=5, api_calls_per_minute=1200),
    "professional": TierPlan(features=BASIC_FEATURES + ADVANCED_FEATURES + ENTERPRISE_FEATURES,
                             models=LOCAL_MODELS, documents_per_minute=10_000, features_per_document=21,
                             api_calls_per_minute=100_000),
}

DAY = 86400.0
# Demo licenses: (tier, days to expiry at start); one is close to expiry.
LICENSES = {
    "DEMO-LITE-0001": ("lite", 200),
    "DEMO-STANDARD-0001": ("standard", 90),
    "DEMO-PRO-0001": ("professional", 365),
    "DEMO-PRO-0002": ("professional", 10),
}
REVOKED_LICENSE = "DEMO-REVOKED-0001"


class DocumentIn(BaseModel):
    doc_type: str = Field(max_length=64)
    features: list[str] = Field(default_factory=list, max_length=32)
    template: Literal["builtin", "custom"] | None = None


class InferenceIn(BaseModel):
    model: str = Field(max_length=64)


class LlmIn(BaseModel):
    provider: str = Field(max_length=64)
    model: str = Field(max_length=64)


class LicenseIn(BaseModel):
    license: str = Field(max_length=128)


class FeedbackIn(BaseModel):
    type: Literal["bug", "feature_request", "general", "survey"]
    rating: int = Field(ge=1, le=5)
    text: str = Field("", max_length=2000)
    feature: str | None = Field(None, min_length=1, max_length=64)


class SessionIn(BaseModel):
    user: str = Field(max_length=128)
    duration: float = Field(ge=0, le=7 * DAY)
    session: str | None = Field(None, max_length=128, description="ends this workflow session")


class ActionIn(BaseModel):
    user: str = Field(max_length=128)
    action: str = Field(max_length=64)
    session: str | None = Field(None, max_length=128, description="the workflow session the action belongs to")


class _Error(web.HTTPException):
    """A JSON error response raised from a handler."""

    def __init__(self, status: int, error: str, **fields):
        self.status_code = status
        super().__init__(text=web.json_response({"error": error, **fields}).text, content_type="application/json")


async def _parse(request: web.Request, model: type[BaseModel]):
    try:
        return model.model_validate(await request.json())
    except ValidationError as exc:
        first = exc.errors()[0]
        raise _Error(400, "invalid_field", field=".".join(map(str, first["loc"])), reason=first["msg"]) from None
    except ValueError:
        raise _Error(400, "malformed_json") from None


def _caller(request: web.Request) -> Identity:
    identity: Identity = request[IDENTITY]
    if identity.tier not in PLANS:
        raise _Error(401, "unknown_api_key")
    return identity


class _MinuteQuota:
    """Per-tier, per-limit counters that reset every minute."""

    def __init__(self):
        self._minute = 0
        self._counts: dict[tuple[str, str], int] = defaultdict(int)

    def take(self, tier: str, limit: str, allowed: int) -> bool:
        minute = int(time.time() // 60)
        if minute != self._minute:
            self._minute, self._counts = minute, defaultdict(int)
        self._counts[tier, limit] += 1
        return self._counts[tier, limit] <= allowed


class DemoApi:
    def __init__(self, recorder: Recorder, rng: random.Random | None = None):
        self.rec = recorder
        self.rng = rng or random.Random()
        self.quota = _MinuteQuota()
        self.loaded_models: set[str] = set()
        self.started = time.time()
        self.license_usage: dict[str, int] = defaultdict(int)
        self.calls: dict[tuple, int] = defaultdict(int)

    def _outcome(self, key: tuple, period: int) -> str:
        """Deterministic failures: the 2nd, (period+2)th, ... call per key fails.

        An early failure of every kind makes each failure series (and each
        failure-ratio panel and alert) show up within the first seconds,
        while a single call still succeeds.
        """
        self.calls[key] += 1
        return "failure" if self.calls[key] % period == 2 % period else "success"

    async def _work(self, simulated_seconds: float) -> None:
        await asyncio.sleep(min(simulated_seconds / 200, 0.02))

    def _check_quota(self, tier: str, limit: str, allowed: int) -> None:
        if not self.quota.take(tier, limit, allowed):
            self.rec.quota_exceeded(tier, limit)
            raise _Error(429, "quota_exceeded", limit=limit)

    async def documents(self, request: web.Request) -> web.Response:
        caller = _caller(request)
        body = await _parse(request, DocumentIn)
        plan = PLANS[caller.tier]
        self._check_quota(caller.tier, "api_calls", plan.api_calls_per_minute)
        self._check_quota(caller.tier, "documents", plan.documents_per_minute)
        features = []
        for feature in body.features:
            if feature in plan.features:
                features.append(feature)
            else:
                self.rec.feature_blocked(caller.tier, feature)
        if len(features) > plan.features_per_document:
            self.rec.quota_exceeded(caller.tier, "features")
            features = features[: plan.features_per_document]
        if body.template == "custom" and "custom_templates" not in plan.features:
            self.rec.feature_blocked(caller.tier, "custom_templates")
        elif body.template:
            self.rec.template_used(caller.tier, body.template)
        outcome = self._outcome(("documents", caller.tier, body.doc_type), 7 if body.doc_type == "image" else 30)
        seconds = self.rng.lognormvariate(0.3, 0.8) * (1 + len(features) / 3)
        await self._work(seconds)
        self.rec.document_processed(caller.tier, body.doc_type, outcome, seconds, features)
        if outcome == "failure":
            raise _Error(422, "processing_failed")
        return web.json_response({"id": f"doc-{self.rng.randrange(10**9)}", "features": features}, status=201)

    async def get_document(self, request: web.Request) -> web.Response:
        _caller(request)
        if request.match_info["id"].startswith("missing"):
            raise _Error(404, "document_not_found")
        return web.json_response({"id": request.match_info["id"], "status": "done"})

    async def inference(self, request: web.Request) -> web.Response:
        caller = _caller(request)
        body = await _parse(request, InferenceIn)
        if body.model not in PLANS[caller.tier].models:
            raise _Error(403, "model_not_in_tier")
        if body.model not in self.loaded_models:
            self.loaded_models.add(body.model)
            self.rec.model_loaded(body.model, self.rng.uniform(1.5, 25), self.rng.randrange(300, 4000) * 2**20)
        self.rec.queue_length("inference", self.rng.randrange(0, 12))
        self.rec.queue_length("ocr", self.rng.randrange(0, 30))
        seconds = self.rng.lognormvariate(-2.0, 0.7)
        await self._work(seconds)
        outcome = self._outcome(("inference", caller.tier, body.model), 25)
        self.rec.inference(caller.tier, body.model, outcome, seconds)
        if outcome == "failure":
            raise _Error(502, "inference_failed")
        return web.json_response({"model": body.model, "ok": True})

    async def llm(self, request: web.Request) -> web.Response:
        caller = _caller(request)
        body = await _parse(request, LlmIn)
        if "llm_extraction" not in PLANS[caller.tier].features:
            self.rec.feature_blocked(caller.tier, "llm_extraction")
            raise _Error(403, "feature_not_in_tier", feature="llm_extraction")
        ttft = self.rng.lognormvariate(-0.8, 0.5)
        output_tokens = self.rng.randrange(50, 1500)
        seconds = ttft + output_tokens / self.rng.uniform(40, 120)
        await self._work(seconds)
        outcome = self._outcome(("llm", body.provider, body.model), 25)
        self.rec.llm_call(caller.tier, body.provider, body.model, outcome, seconds, ttft,
                          input_tokens=self.rng.randrange(200, 6000), output_tokens=output_tokens)
        self.rec.feature_used(caller.tier, "llm_extraction", outcome)
        if outcome == "failure":
            raise _Error(502, "llm_failed")
        return web.json_response({"tokens": output_tokens})

    async def validate_license(self, request: web.Request) -> web.Response:
        caller = _caller(request)
        body = await _parse(request, LicenseIn)
        seconds = self.rng.lognormvariate(-4.5, 0.6)
        known = LICENSES.get(body.license)
        if body.license == REVOKED_LICENSE:
            result = "revoked"
        elif known is None:
            result = "invalid"
        elif self._outcome(("license", caller.tier), 100) == "failure":
            result = "error"  # license server hiccup
        else:
            result = "valid"
        self.rec.license_validation(caller.tier, result, seconds, license_key=body.license)
        if known is not None:
            tier, days = known
            plan = PLANS[tier]
            self.license_usage[body.license] += 1
            self.rec.license_status(
                tier, body.license, expires_at=self.started + days * DAY,
                usage={"documents": self.license_usage[body.license] * 7, "api_calls": self.license_usage[body.license] * 19},
                limits={"documents": plan.documents_per_minute * 60, "api_calls": plan.api_calls_per_minute * 30},
            )
        return web.json_response({"result": result}, status=200 if result == "valid" else 403)

    async def feedback(self, request: web.Request) -> web.Response:
        caller = _caller(request)
        body = await _parse(request, FeedbackIn)
        # Like a Clary service would: the text's sentiment computed here, the feature named by the client.
        urgent = self.rec.feedback(caller.tier, body.type, body.rating, feature=body.feature,
                                   sentiment=await sentiment.score_async(body.text))
        return web.json_response({"urgent": urgent}, status=201)

    async def sessions(self, request: web.Request) -> web.Response:
        caller = _caller(request)
        body = await _parse(request, SessionIn)
        if body.session:  # the end of a session whose actions came with its id
            self.rec.workflow_ended((body.session,))
        else:
            self.rec.user_action(caller.tier, "login", body.user)
        self.rec.session_ended(caller.tier, body.duration)
        return web.json_response({"ok": True}, status=201)

    async def actions(self, request: web.Request) -> web.Response:
        caller = _caller(request)
        body = await _parse(request, ActionIn)
        self.rec.user_action(caller.tier, body.action, body.user, session_id=body.session)
        return web.json_response({"ok": True}, status=201)

    async def boom(self, request: web.Request) -> web.Response:
        # Deliberate: a 500 with an error id, counted in clary_errors_total{error_type="RuntimeError"},
        # logged as one INFO line by exporter.demo without a stack trace.
        raise expected(RuntimeError("demo failure: this route always raises"), "exporter.demo")


def create_demo_app(recorder: Recorder, resolver: Resolver, rng: random.Random | None = None,
                    report_errors=None) -> web.Application:
    api = DemoApi(recorder, rng)
    app = web.Application()
    # Before it is mounted: wraps the routes below at startup; error records go to ``report_errors``.
    instrument(app, recorder, resolver, report_errors=report_errors)
    app.router.add_post("/api/v1/documents", api.documents)
    app.router.add_get("/api/v1/documents/{id}", api.get_document)
    app.router.add_post("/api/v1/inference", api.inference)
    app.router.add_post("/api/v1/llm", api.llm)
    app.router.add_post("/api/v1/licenses/validate", api.validate_license)
    app.router.add_post("/api/v1/feedback", api.feedback)
    app.router.add_post("/api/v1/sessions", api.sessions)
    app.router.add_post("/api/v1/actions", api.actions)
    app.router.add_get("/api/v1/boom", api.boom)
    return app
