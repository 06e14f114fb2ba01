"""Property tests: whatever the request (method, path, headers) or the recorder input,
label values come only from the allowed sets, and a raw API key or user id never
reaches the exposition or a log record. Every integration (aiohttp ``instrument`` and
``metrics_middleware``, ASGI), driven directly."""

from __future__ import annotations

import asyncio
import io
import logging
from unittest import mock

import pytest

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as om_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from exporter.instrument.asgi import MetricsMiddleware
from exporter.catalog import CATALOG, ERROR_TYPE, METHODS, TIERS
from exporter.config import ApiKey
from exporter.instrument.identity import key_table_resolver
from exporter.labels import LabelRejected
from exporter.logs import JsonFormatter, TextFormatter
from exporter.instrument.aiohttp_middleware import instrument, metrics_middleware
from exporter.instrument.hashing import Hasher
from exporter.instrument.recorder import Recorder
from tests.instrument.asgi_client import call

KEYS = {
    "sk_live_lite_9f3a1c77e2": ApiKey(tier="lite", user="alice@example.com"),
    "sk_live_std_0b4d2e1f9a": ApiKey(tier="standard", user="bob@example.com"),
    "sk_live_pro_c3a9f0d1b8": ApiKey(tier="professional", user="carol@example.com"),
}
USERS = [entry.user for entry in KEYS.values()]
AIOHTTP_TEMPLATES = {"/items/{id}", "/items/{id}/fail", "/forbidden", "/status/{code}", "/sub/docs/{doc}"}
ASGI_TEMPLATES = {"/items/{id}", "/items/{id}/fail", "/forbidden", "/status/{code}", "/sub/docs/{doc}"}
TEMPLATES = AIOHTTP_TEMPLATES | ASGI_TEMPLATES
ALLOWED = {
    "tier": {*TIERS, "unknown"},
    "method": {*METHODS, "other"},
    "error_type": {*ERROR_TYPE.values, "other"},
}

# --- inputs ---------------------------------------------------------------------------------

_header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
                       max_size=60)
_raw_keys = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=10, max_size=30).map(lambda s: "sk_" + s)
api_keys = st.one_of(st.none(), st.sampled_from(sorted(KEYS)), _raw_keys, st.just(""))
methods = st.one_of(
    st.sampled_from(METHODS),
    st.sampled_from([m.lower() for m in METHODS]),
    st.from_regex(r"\A[A-Z]{1,12}\Z"),
)
_segment = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF, blacklist_characters="/?#%\\"),
                   min_size=1, max_size=12)
paths = st.one_of(
    st.sampled_from(["/items/1", "/items/x/fail", "/forbidden", "/status/404", "/status/503", "/sub/docs/d",
                     "/metrics", "/healthz", "/"]),
    st.lists(_segment, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts)),
    st.builds(lambda a, b: f"/items/{a}/{b}", _segment, _segment),
)
traceparents = st.one_of(
    st.none(),
    st.builds(lambda t, p, f: f"00-{t:032x}-{p:016x}-{f:02x}",
              st.integers(0, 2**128 - 1), st.integers(0, 2**64 - 1), st.integers(0, 255)),
    _header_text,
)
extra_headers = st.dictionaries(st.from_regex(r"\AX-[A-Za-z]{1,10}\Z"), _header_text, max_size=3)


def check_exposition(registry: CollectorRegistry, templates: set[str], secrets: list[str]) -> None:
    for family in registry.collect():
        for sample in family.samples:
            labels = sample.labels
            for name, allowed in ALLOWED.items():
                if name in labels and family.name.startswith("clary_"):
                    assert labels[name] in allowed, (sample.name, labels)
            if family.name in ("clary_http_requests", "clary_http_request_duration_seconds", "clary_errors"):
                assert labels["route"] in templates | {"unmatched"}, labels
            if "code" in labels:
                assert 100 <= int(labels["code"]) <= 599
    text = generate_latest(registry).decode() + om_latest(registry).decode()
    for secret in secrets:
        assert secret not in text


class Logs:
    """Everything the middlewares log, rendered by both formatters."""

    def __init__(self, *names: str):
        self.stream = io.StringIO()
        self.handlers = []
        for formatter in (JsonFormatter(), TextFormatter()):
            handler = logging.StreamHandler(self.stream)
            handler.setFormatter(formatter)
            self.handlers.append(handler)
        self.loggers = [logging.getLogger(name) for name in names]
        for logger in self.loggers:
            for handler in self.handlers:
                logger.addHandler(handler)

    def text(self) -> str:
        return self.stream.getvalue()


# --- aiohttp -----------------------------------------------------------------------------------


class AiohttpTarget:
    def __init__(self, integration: str = "middleware"):
        self.registry = CollectorRegistry()
        self.recorder = Recorder(self.registry, Hasher("property-test-secret"))
        self.middleware = None
        self.app = web.Application()
        if integration == "middleware":
            self.middleware = metrics_middleware(self.recorder, key_table_resolver(KEYS))
        else:
            instrument(self.app, self.recorder, key_table_resolver(KEYS))
        r = self.app.router
        r.add_get("/items/{id}", self.ok)
        r.add_post("/items/{id}", self.ok)
        r.add_route("*", "/items/{id}/fail", self.fail)
        r.add_get("/forbidden", self.forbidden)
        r.add_route("*", "/status/{code}", self.status)
        sub = web.Application()
        sub.router.add_get("/docs/{doc}", self.ok)
        self.app.add_subapp("/sub", sub)
        self.app.on_startup.freeze()
        asyncio.run(self.app.startup())  # instrument() wraps the handlers here
        self.app.freeze()
        self.logs = Logs("exporter.instrument.aiohttp_middleware")

    async def ok(self, request):
        return web.Response(text="ok")

    async def fail(self, request):
        raise KeyError(f"failed for {request.headers.get('X-API-Key')} at {request.path}")

    async def forbidden(self, request):
        raise web.HTTPForbidden()

    async def status(self, request):
        code = request.match_info["code"]
        return web.Response(status=int(code) if code.isdigit() and 200 <= int(code) <= 599 else 200)

    async def request(self, method: str, path: str, headers: dict) -> None:
        writer = mock.Mock()
        writer.output_size = 0
        request = make_mocked_request(method, path, headers=headers, app=self.app, writer=writer)
        match_info = await self.app.router.resolve(request)
        match_info.add_app(self.app)
        match_info.freeze()
        request._match_info = match_info  # private seam: a mocked request has no public way to take a resolved match
        try:
            if self.middleware is None:
                await match_info.handler(request)
            else:
                await self.middleware(request, match_info.handler)
        except web.HTTPException:
            pass


_AIOHTTP: dict[str, AiohttpTarget] = {}


@pytest.mark.parametrize("integration", ["instrument", "middleware"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=methods, path=paths, api_key=api_keys, traceparent=traceparents, extra=extra_headers)
@example(method="POST", path="/items/secret-doc-77/fail", api_key="sk_live_pro_c3a9f0d1b8", traceparent=None, extra={})
@example(method="get", path="/items/secret-doc-77/fail", api_key="sk_unknown_key_0000", traceparent=None, extra={})
def test_aiohttp_any_request_yields_allowed_labels_and_no_secret(integration, method, path, api_key, traceparent,
                                                                  extra):
    if integration not in _AIOHTTP:
        _AIOHTTP[integration] = AiohttpTarget(integration)
    target = _AIOHTTP[integration]
    headers = dict(extra)
    if api_key is not None:
        headers["X-API-Key"] = api_key
    if traceparent is not None:
        headers["traceparent"] = traceparent
    asyncio.run(target.request(method, path, headers))
    secrets = [*USERS, *KEYS] + ([api_key] if api_key else [])
    check_exposition(target.registry, AIOHTTP_TEMPLATES, secrets)
    logged = target.logs.text()
    for secret in secrets:
        assert secret not in logged
    if len(path) >= 4 and not any(path in template for template in TEMPLATES):
        assert path not in logged  # a raw path never reaches a log record either


# --- ASGI -----------------------------------------------------------------------------------------


class AsgiTarget:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.recorder = Recorder(self.registry, Hasher("property-test-secret"))

        async def ok(request):
            return PlainTextResponse("ok")

        async def fail(request):
            raise KeyError(f"failed for {request.headers.get('x-api-key')} at {request.url.path}")

        async def forbidden(request):
            raise HTTPException(403)

        async def status(request):
            code = request.path_params["code"]
            return PlainTextResponse("", status_code=int(code) if code.isdigit() and 200 <= int(code) <= 599 else 200)

        self.app = Starlette(routes=[
            Route("/items/{id}", ok, methods=["GET", "POST"]),
            Route("/items/{id}/fail", fail, methods=[m for m in METHODS if m != "HEAD"]),
            Route("/forbidden", forbidden),
            Route("/status/{code}", status, methods=list(METHODS)),
            Mount("/sub", routes=[Route("/docs/{doc}", ok)]),
        ])
        self.app.add_middleware(MetricsMiddleware, recorder=self.recorder, resolver=key_table_resolver(KEYS))
        self.logs = Logs("exporter.instrument.asgi")


_ASGI: AsgiTarget | None = None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=methods, path=paths, api_key=api_keys, traceparent=traceparents, extra=extra_headers)
@example(method="POST", path="/items/secret-doc-77/fail", api_key="sk_live_pro_c3a9f0d1b8", traceparent=None, extra={})
@example(method="get", path="/items/secret-doc-77/fail", api_key="sk_unknown_key_0000", traceparent=None, extra={})
def test_asgi_any_request_yields_allowed_labels_and_no_secret(method, path, api_key, traceparent, extra):
    global _ASGI
    target = _ASGI = _ASGI or AsgiTarget()
    headers = dict(extra)
    if api_key is not None:
        headers["X-API-Key"] = api_key
    if traceparent is not None:
        headers["traceparent"] = traceparent
    reply = asyncio.run(call(target.app, method, path, headers))
    assert reply.status is not None and 100 <= reply.status <= 599
    secrets = [*USERS, *KEYS] + ([api_key] if api_key else [])
    check_exposition(target.registry, ASGI_TEMPLATES, secrets)
    logged = target.logs.text()
    for secret in secrets:
        assert secret not in logged
    if len(path) >= 4 and not any(path in template for template in TEMPLATES):
        assert path not in logged  # a raw path never reaches a log record either


# --- the recording API ------------------------------------------------------------------------------

_ANY = st.one_of(st.none(), st.integers(-5, 700), st.text(max_size=20), st.sampled_from(
    [*TIERS, "unknown", "pdf", "ocr", "gpt-4o", "openai", "upload", "success", "failure", "builtin", "custom",
     "documents", "ocr", "valid", "expired", "bug", "input"]))

_CALLS = {
    "document_processed": lambda r, a: r.document_processed(a[0], a[1], a[2], 1.0, [a[3], a[4]]),
    "feature_blocked": lambda r, a: r.feature_blocked(a[0], a[1]),
    "quota_exceeded": lambda r, a: r.quota_exceeded(a[0], a[1]),
    "template_used": lambda r, a: r.template_used(a[0], a[1]),
    "inference": lambda r, a: r.inference(a[0], a[1], a[2], 0.1),
    "model_loaded": lambda r, a: r.model_loaded(a[0], 3.0, 1e9),
    "queue_length": lambda r, a: r.queue_length(a[0], 3),
    "llm_call": lambda r, a: r.llm_call(a[0], a[1], a[2], a[3], 1.0, 0.2, 10, 20),
    "license_validation": lambda r, a: r.license_validation(a[0], a[1], 0.01, "LIC-" + str(a[2])),
    "user_action": lambda r, a: r.user_action(a[0], a[1], "user-" + str(a[2])),
    "http_request": lambda r, a: r.http_request(a[0], a[1], "/fixed/{id}", a[2], 0.1),
    "error": lambda r, a: r.error(a[0], a[1], "/fixed/{id}"),
    "session": lambda r, a: r.session_ended(r.session_started(a[0], "user-" + str(a[1]))),
}


def _allowed_values(metric_name: str, label: str, recorder: Recorder) -> set[str] | None:
    spec = next(s for s in CATALOG if s.name == metric_name)
    label_spec = next(lab for lab in spec.labels if lab.name == label)
    allowed = recorder.metrics.guard.allowed(label_spec)
    if allowed is None:
        return None
    return set(allowed) | ({label_spec.fallback} if label_spec.fallback else set()) | {"other"}


_RECORDER: Recorder | None = None


@settings(max_examples=300, deadline=None)
@given(call_name=st.sampled_from(sorted(_CALLS)), args=st.lists(_ANY, min_size=5, max_size=5))
def test_recorder_any_input_yields_allowed_labels_or_a_clear_rejection(call_name, args):
    global _RECORDER
    rec = _RECORDER = _RECORDER or Recorder(CollectorRegistry(), Hasher("property-test-secret"))
    try:
        _CALLS[call_name](rec, args)
    except LabelRejected as exc:
        assert exc.label in {"outcome", "code", "kind", "type", "direction"}
    by_family = {s.name: s for s in CATALOG}
    for family in rec.metrics.registry.collect():
        name = family.name if family.name in by_family else f"{family.name}_total"
        if name not in by_family or by_family[name].collected:
            continue
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label == "le":
                    continue
                assert isinstance(value, str) and value
                allowed = _allowed_values(name, label, rec)
                if allowed is not None:
                    assert value in allowed, (name, label, value)
                elif label == "code":
                    assert 100 <= int(value) <= 599
    text = generate_latest(rec.metrics.registry).decode()
    for raw in args:
        if isinstance(raw, str) and len(raw) >= 6 and raw not in ("success", "failure", "builtin", "custom",
                                                                  "upload", "openai", "gpt-4o", "expired",
                                                                  "documents", "unknown", "standard"):
            # user ids and license keys become HMACs; free text never becomes a label
            assert f'"user-{raw}"' not in text and f"LIC-{raw}" not in text


# --- floods ---------------------------------------------------------------------------------------


def _http_series(registry: CollectorRegistry) -> list[dict[str, str]]:
    return [s.labels for f in registry.collect() for s in f.samples if s.name == "clary_http_requests_total"]


def test_a_flood_of_random_paths_methods_and_keys_adds_no_series():
    """20,000 requests with distinct raw paths, keys and methods: the series stay few and bounded."""
    import random

    rng = random.Random(5)
    aio, asgi = [AiohttpTarget("instrument"), AiohttpTarget("middleware")], AsgiTarget()

    async def flood():
        for i in range(10_000):
            method = rng.choice([*METHODS, "BREW", f"X{i % 50}"])
            key = rng.choice([*KEYS, f"sk_random_{rng.getrandbits(64):x}", None])
            headers = {"X-API-Key": key} if key else {}
            path = rng.choice([f"/items/{rng.getrandbits(40):x}", f"/raw/{rng.getrandbits(64):x}/x",
                               f"/sub/docs/{i}", f"/status/{rng.choice([200, 404, 503])}"])
            for target in aio:
                await target.request(method, path, headers)
            await call(asgi.app, method, path, headers)

    asyncio.run(flood())
    for target, templates in [*((t, AIOHTTP_TEMPLATES) for t in aio), (asgi, ASGI_TEMPLATES)]:
        series = _http_series(target.registry)
        assert sum(target.registry.get_sample_value("clary_http_requests_total", s) for s in series) == 10_000
        assert {s["route"] for s in series} <= templates | {"unmatched"}
        assert {s["tier"] for s in series} <= ALLOWED["tier"]
        assert {s["method"] for s in series} <= ALLOWED["method"]
        # tiers x methods x routes x a handful of codes, whatever the input
        assert len(series) <= 4 * 8 * (len(templates) + 1) * 6
        assert not target.registry.get_sample_value(
            "clary_exporter_label_overflow_total", {"metric": "clary_http_requests_total", "label": "route"})
