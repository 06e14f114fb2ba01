"""``GET /privacy`` (HTML) and ``/privacy.json``: the privacy notice, generated from the code and the config.

The notice is built at request time from three sources that cannot drift
from what the exporter does: the inventory of stored columns and metric
labels (``exporter.server.privacy_fields``, checked against the real schema
and catalog by the tests), the running config (retention and the other
durations), and the application's router: a right (erasure, objection,
access, consent) is listed only when its endpoint is registered, so the
notice never promises an endpoint this exporter does not serve. The HTML is
the same data, every value escaped. Public like the landing page: web-config
basic auth applies to it as to every page.
"""

from __future__ import annotations

import html
import re
from functools import partial
from typing import Any

from aiohttp import web

from exporter.config import Config
from exporter.server.privacy_fields import IN_MEMORY, LABELS, RETENTIONS, STORE_FIELDS

_PLACEHOLDER = re.compile(r"\{[^}/]*\}")

# (method, path with {id}) -> (right, what it does); listed only if the router has the route.
RIGHTS = (
    ("GET", "/api/v1/users/{id}/export", "access",
     "everything stored for the user, as JSON (consent state included)"),
    ("DELETE", "/api/v1/users/{id}", "erasure",
     "deletes what is stored under the user's hashed id (feedback, notifications, activity, error records); "
     + "an opt-out stays"),
    ("POST", "/api/v1/users/{id}/opt-out", "objection",
     "stops recording the user; counters still count anonymously"),
    ("POST", "/api/v1/users/{id}/opt-in", "objection withdrawn", "records the user again"),
    ("POST", "/api/v1/users/{id}/consent", "consent",
     "records consent given or withdrawn; withdrawal acts like an opt-out"),
)


def registered(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route, each path variable written ``{id}``."""
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path:
            found.add((route.method, _PLACEHOLDER.sub("{id}", path)))
    return found


def _settings(config: Config) -> dict[str, Any]:
    return {"retention_days": config.retention_days, "license_stale_after": config.license_stale_after,
            "workflow_session_timeout": config.workflow_session_timeout,
            "urgent_notify_window_seconds": config.urgent_notify_window_seconds}


def consent_mode(config: Config) -> str:
    """``opt_out`` (the default: recorded unless the user objects) or ``opt_in``, where the config has it."""
    privacy = getattr(config, "privacy", None)
    mode = getattr(privacy, "consent", None)
    return str(getattr(mode, "value", mode) or "opt_out")


def notice(config: Config, routes: set[tuple[str, str]]) -> dict[str, Any]:
    """The whole notice as data; the JSON body, and what the HTML renders."""
    settings = _settings(config)
    retentions = {key: text.format(**settings) for key, text in RETENTIONS.items()}
    return {
        "settings": settings,
        "consent": consent_mode(config),
        "stored": [{"field": name, "personal": field.personal, "protection": field.protection,
                    "retention": retentions[field.retention]} for name, field in STORE_FIELDS.items()],
        "in_memory": [{"what": what, "protection": protection, "retention": retention.format(**settings)}
                      for what, protection, retention in IN_MEMORY],
        "labels": [{"label": name, "personal": label.personal, "note": label.note}
                   for name, label in sorted(LABELS.items())],
        "rights": [{"right": right, "method": method, "path": path, "effect": effect}
                   for method, path, right, effect in RIGHTS if (method, path) in routes],
    }


_CONSENT = {
    "opt_out": "Users are recorded unless they object (consent mode opt_out).",
    "opt_in": "Nothing per user is kept until the user's consent is recorded; counters count anonymously "
              "meanwhile (consent mode opt_in).",
}


def _table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    def cells(tag: str, values: tuple[Any, ...]) -> str:
        return "".join(f"<{tag}>{html.escape(str(value))}</{tag}>" for value in values)
    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return f"<table border=\"1\"><tr>{cells('th', headers)}</tr>{body}</table>"


def render_html(data: dict[str, Any]) -> str:
    yes = {True: "yes", False: "no"}
    consent = _CONSENT.get(data["consent"], data["consent"])
    rights = "".join(f"<li><code>{html.escape(r['method'])} {html.escape(r['path'])}</code> ({html.escape(r['right'])}"
                     f"): {html.escape(r['effect'])}</li>" for r in data["rights"])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Privacy notice - Clary AI exporter</title></head>
<body>
<h1>Privacy notice</h1>
<p>Generated from this exporter's code and configuration. User ids are never stored or used as metric labels:
they are replaced by an HMAC under the operator's secret. Feedback, activity and error records are kept
{data['settings']['retention_days']} days (retention_days); each field's retention is listed below.
{html.escape(consent)} <a href="privacy.json">This notice as JSON</a>.</p>
<h2>Your rights</h2>
<p>Sent by the operator's admin on your behalf (admin token), for a user id:</p>
<ul>{rights}</ul>
<h2>What is stored</h2>
{_table(("field", "personal", "protection", "kept"),
        [(f["field"], yes[f["personal"]], f["protection"], f["retention"]) for f in data["stored"]])}
<h2>What is held in memory only</h2>
{_table(("what", "protection", "kept"), [(m["what"], m["protection"], m["retention"]) for m in data["in_memory"]])}
<h2>Metric labels</h2>
{_table(("label", "personal", "note"), [(m["label"], yes[m["personal"]], m["note"]) for m in data["labels"]])}
</body></html>
"""


async def privacy_notice(config: Config, request: web.Request) -> web.Response:
    """HTML, or JSON for ``/privacy.json`` and for a client that accepts JSON and not HTML."""
    data = notice(config, registered(request.app))
    accept = request.headers.get("Accept", "")
    if request.path.endswith(".json") or ("application/json" in accept and "text/html" not in accept):
        return web.json_response(data)
    return web.Response(text=render_html(data), content_type="text/html")


def add_routes(app: web.Application, config: Config) -> None:
    handler = partial(privacy_notice, config)
    app.router.add_get("/privacy", handler)
    app.router.add_get("/privacy.json", handler)
