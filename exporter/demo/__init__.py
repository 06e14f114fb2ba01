"""Demo mode: public credentials, a Clary-like API under ``/demo/`` and bounded traffic to it.

The CLI mounts all of it with one call, :func:`create_app`, in place of
``exporter.server.app.create_app``. Nothing below this package imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter.api.app import INGEST
from exporter.config import Config
from exporter.demo.api import create_demo_app
from exporter.demo.credentials import (DEMO_ADMIN_TOKEN, DEMO_API_KEYS, DEMO_INGEST_TOKEN, DEMO_SECRET,
                                       with_demo_credentials)
from exporter.demo.traffic import DemoTraffic
from exporter.instrument.identity import key_table_resolver
from exporter.server import app as server
from exporter.server.webconfig import WebConfig

__all__ = ["DEMO_ADMIN_TOKEN", "DEMO_API_KEYS", "DEMO_INGEST_TOKEN", "DEMO_SECRET", "create_app",
           "with_demo_credentials"]

log = logging.getLogger(__name__)
LISTEN_WAIT_SECONDS = 10.0


def create_app(config: Config, registry: CollectorRegistry | None = None, web_config: WebConfig | None = None,
               traffic_base: str | None = None) -> web.Application:
    """The exporter app with the demo credentials and the demo API under ``/demo/``.

    ``traffic_base`` (a loopback URL of this app's listener) also sends the
    demo traffic there while the app runs, bounded by ``config.demo_duration``.
    """
    admin_auth = "configured admin token" if config.admin_token else "public demo admin token"
    config = with_demo_credentials(config.model_copy(update={"demo": True}))
    app = server.create_app(config, registry, web_config)
    resolver = key_table_resolver(config.api_keys)
    # Its unhandled errors (the deliberate /boom) become error records of this exporter directly.
    app.add_subapp("/demo/", create_demo_app(app[server.RECORDER], resolver, report_errors=app[INGEST].errors))
    if traffic_base is not None:
        _send_traffic(app, traffic_base, config, admin_auth)
    return app


def _send_traffic(app: web.Application, base: str, config: Config, admin_auth: str) -> None:
    """Demo traffic from start-up until shutdown begins.

    Stopped on shutdown, before the server waits for open connections to
    finish: traffic still running then would keep them busy until the
    shutdown timeout.
    """
    tasks: list[asyncio.Task] = []

    async def start(app: web.Application) -> None:
        generator = DemoTraffic(base, rate=config.demo_rate, duration=config.demo_duration,
                                ingest_token=DEMO_INGEST_TOKEN)
        tasks.append(asyncio.create_task(_when_listening(base, generator.run), name="demo-traffic"))
        log.info("demo mode: open %s/metrics; demo API under /demo/api/v1/. Its errors are deliberate and "
                 "expected: simulated failures (4xx/5xx) and GET /demo/api/v1/boom (a 500, logged as one "
                 "'deliberate error (expected)' line)", base, extra={"fields": {"admin_auth": admin_auth}})

    async def stop(app: web.Application) -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        tasks.clear()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)


async def _when_listening(base: str, run) -> None:
    """Start ``run`` once the listener answers (the app's context starts before the site)."""
    deadline = time.monotonic() + LISTEN_WAIT_SECONDS
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    await run()
