"""Library mode with several worker processes: prometheus_client multiprocess mode.

A Clary service run by gunicorn (``aiohttp.GunicornWebWorker``) or uvicorn
with ``--workers N`` is N processes, each with its own metric objects; a
scrape reaches one of them. In multiprocess mode every process writes its
values to memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics``
aggregates all files at scrape time:

- counters and histograms are summed over all processes, dead ones included
  (a worker's requests do not vanish when it is recycled);
- series budgets hold for all workers together: the label guard shares
  the series each family admitted through a file in the directory;
- gauges combine as their ``multiprocess_mode`` says
  (``exporter.instrument.metrics.MULTIPROCESS_MODES``); the ``live*`` ones drop a dead
  worker's value once :func:`mark_dead` ran for its pid;
- custom collectors (the active-user and active-license HyperLogLog
  sketches, the system and GPU collectors) are per process and are NOT
  aggregated: they stay out of the multiprocess ``/metrics``. Report users
  and licenses to a central ``clary-exporter`` instead (its event API), and
  let that exporter, one per machine, collect system and GPU metrics.

Rules (prometheus_client's): the environment variable must be set before
``prometheus_client`` is first imported in a process (so in the gunicorn
config or the shell, not in the app module), the directory must be emptied
when the service starts (:func:`prepare_directory`), and the recorder's
registry is private: serve :func:`collecting_registry`, never the registry
the metric objects were created in. See ``examples/multiprocess/``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from exporter.instrument.exposition import Renderer
from exporter.labels import SHARED_SERIES_GLOB

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def directory() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


def active() -> bool:
    """True when this process writes its metrics to the multiprocess directory."""
    return directory() is not None and values.ValueClass.__name__ == "MmapedValue"


def prepare_directory(path: str | os.PathLike | None = None) -> Path:
    """Create the directory and remove every file a previous run left.

    Call once, before any worker starts (gunicorn's ``on_starting`` hook, or
    the shell script that starts uvicorn): stale files would add a previous
    run's counts to this one's.
    """
    target = Path(path) if path is not None else directory()
    if target is None:
        raise RuntimeError(f"{ENV} is not set")
    target.mkdir(parents=True, exist_ok=True)
    for pattern in ("*.db", SHARED_SERIES_GLOB):  # values, and the series each family admitted
        for stale in target.glob(pattern):
            stale.unlink()
    return target


def mark_dead(pid: int, path: str | os.PathLike | None = None) -> None:
    """A worker exited: drop its values from the ``live*`` gauges."""
    mark_process_dead(pid, str(path) if path is not None else None)


def child_exit(server, worker) -> None:
    """gunicorn hook, in the config file: ``from exporter.instrument.multiprocess import child_exit``."""
    mark_dead(worker.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True


def sweep_dead(path: str | os.PathLike | None = None) -> list[int]:
    """Mark every pid with live-gauge files but no process as dead.

    For process managers without a child-exit hook (uvicorn ``--workers``):
    the metrics handler runs it before each collection. Returns the pids swept.
    """
    target = Path(path) if path is not None else directory()
    if target is None:
        return []
    pids = {int(m.group(1)) for f in target.iterdir() if (m := _LIVE_FILE.fullmatch(f.name))}
    dead = sorted(pid for pid in pids if pid != os.getpid() and not _alive(pid))
    for pid in dead:
        mark_dead(pid, target)
    return dead


def collecting_registry(path: str | os.PathLike | None = None) -> CollectorRegistry:
    """A registry holding only the MultiProcessCollector: what ``/metrics`` serves."""
    target = Path(path) if path is not None else directory()
    if target is None:
        raise RuntimeError(f"{ENV} is not set: multiprocess mode is off")
    if not active():
        raise RuntimeError(
            f"{ENV} was set after prometheus_client was imported in this process, so its metrics are "
            "in memory, not in the directory: set it in the environment of the process manager"
        )
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(target))
    return registry


_RENDERER = web.AppKey("clary.multiprocess.renderer", Renderer)


def add_metrics_route(app: web.Application, path: str = "/metrics") -> None:
    """Serve the aggregated metrics of all workers at ``path`` on ``app``."""
    app[_RENDERER] = Renderer(collecting_registry())

    async def metrics(request: web.Request) -> web.Response:
        sweep_dead()
        rendered = await request.app[_RENDERER].render(
            request.headers.get("Accept"), request.headers.get("Accept-Encoding")
        )
        response = web.Response(body=rendered.body, headers={"Content-Type": rendered.content_type})
        if rendered.gzipped:
            response.headers["Content-Encoding"] = "gzip"
        return response

    async def close(app: web.Application) -> None:
        app[_RENDERER].close()

    app.router.add_get(path, metrics)
    app.on_cleanup.append(close)
