"""The ASGI middleware with report_errors: each 500's record goes to the reporter, redacted, never by default."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from exporter.instrument.asgi import MetricsMiddleware
from exporter.instrument.identity import key_table_resolver
from tests.instrument.asgi_client import call
from tests.instrument.http_helpers import KEYS, LITE, RAW_ID


class Collected:
    """An ErrorSink that keeps what it is given."""

    def __init__(self):
        self.records: list[dict] = []

    def report(self, record: dict) -> bool:
        self.records.append(record)
        return True


async def fail(request):
    raise LookupError(f"no item {request.path_params['id']} for lite-user-1, mail ops@example.com")


def app(rec, sink=None) -> Starlette:
    service = Starlette(routes=[Route("/items/{id}/fail", fail, methods=["POST"])])
    service.add_middleware(MetricsMiddleware, recorder=rec, resolver=key_table_resolver(KEYS), report_errors=sink)
    return service


async def test_a_500_is_reported_with_its_error_id_redacted(rec):
    sink = Collected()
    reply = await call(app(rec, sink), "POST", f"/items/{RAW_ID}/fail", LITE)
    assert reply.status == 500
    [record] = sink.records
    assert record["error_id"] == reply.json()["error_id"] == record["id"]
    assert (record["type"], record["tier"], record["route"]) == ("error", "lite", "/items/{id}/fail")
    assert (record["error_type"], record["user_id"]) == ("LookupError", "lite-user-1")
    assert record["message"] == "no item <redacted> for <redacted>, mail <redacted>"
    for secret in (RAW_ID, "ops@example.com", "key-lite-3f9a1c"):
        assert secret not in record["trace"]


async def test_nothing_is_reported_by_default(rec, monkeypatch):
    built = []
    monkeypatch.setattr("exporter.instrument.errors.error_record", lambda *a, **k: built.append(a) or {})
    reply = await call(app(rec), "POST", "/items/1/fail", LITE)
    assert reply.status == 500 and built == []
