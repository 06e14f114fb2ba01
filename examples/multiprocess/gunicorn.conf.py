"""gunicorn config: a Clary aiohttp service with 4 workers in multiprocess mode.

    gunicorn -c examples/multiprocess/gunicorn.conf.py

Environment: PROMETHEUS_MULTIPROC_DIR (default: a directory under /tmp),
BIND (default 127.0.0.1:8000), WEB_CONCURRENCY (workers, default 4).
"""

import os
import tempfile

# Before anything imports prometheus_client: the value class is chosen at import.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), "clary-multiproc"))

from exporter.instrument import multiprocess  # noqa: E402

pythonpath = os.path.dirname(os.path.abspath(__file__))
wsgi_app = "app:create_app"
worker_class = "aiohttp.GunicornWebWorker"
bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
# Not preloaded: each worker imports the app (and creates its metrics) after the fork.
preload_app = False
graceful_timeout = 10


def on_starting(server):
    """Master, once: a previous run's files would add its counts to this one's."""
    multiprocess.prepare_directory()


def child_exit(server, worker):
    """Master, per exited worker: its live* gauge values go (counters stay)."""
    multiprocess.child_exit(server, worker)
