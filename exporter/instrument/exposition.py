"""Rendering /metrics without stalling the event loop.

prometheus_client's aiohttp handler renders on the loop: at 50k series every
other request waits for hundreds of milliseconds. Here the render (collect,
encode, gzip) runs on one dedicated thread, one scrape at a time, and the
interpreter's switch interval is shortened while a render runs so the loop
thread gets the GIL back within a fraction of a millisecond instead of five,
and the cyclic garbage collector is paused for the render.
``benchmarks/scrape_stall.py`` measures the effect.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

# Seconds the render thread may hold the GIL before the loop thread may take it.
RENDER_SWITCH_INTERVAL = 0.0002
RENDER_THREAD_NICE = 10
GZIP_LEVEL = 1  # fast: the body is text that compresses ~10x even at level 1


@dataclass(frozen=True)
class Rendered:
    body: bytes
    content_type: str
    gzipped: bool


class _RenderGuard:
    """Shorter GIL switch interval and no cyclic GC while any render runs.

    A render allocates hundreds of thousands of short-lived objects; left
    alone, the cyclic collector runs full collections in the middle of it,
    holding the GIL for tens of milliseconds. Reference counting frees the
    render's garbage anyway, so pausing the collector for its duration is
    safe. Process-wide state, so nested renders are reference-counted.
    """

    def __init__(self, switch_interval: float | None, pause_gc: bool):
        self._interval = switch_interval
        self._pause_gc = pause_gc
        self._depth = 0
        self._saved_interval = sys.getswitchinterval()
        self._gc_was_enabled = True
        self._lock = threading.Lock()

    def __enter__(self):
        with self._lock:
            if self._depth == 0:
                self._saved_interval = sys.getswitchinterval()
                if self._interval is not None:
                    sys.setswitchinterval(min(self._interval, self._saved_interval))
                self._gc_was_enabled = gc.isenabled()
                if self._pause_gc:
                    gc.disable()
            self._depth += 1

    def __exit__(self, *exc):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                sys.setswitchinterval(self._saved_interval)
                if self._gc_was_enabled:
                    gc.enable()


def render(registry: CollectorRegistry, accept: str | None, accept_encoding: str | None) -> Rendered:
    """Synchronous render: negotiate the format, encode, gzip when asked."""
    encoder, content_type = choose_encoder(accept or "")
    body = encoder(registry)
    gzipped = "gzip" in (accept_encoding or "")
    if gzipped:
        body = gzip.compress(body, compresslevel=GZIP_LEVEL)
    return Rendered(body, content_type, gzipped)


def _lower_thread_priority() -> None:
    """Nice the render thread (Linux niceness is per thread) so that, when
    cores are scarce, the scheduler runs the event-loop thread first."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), RENDER_THREAD_NICE)
    except (AttributeError, OSError):  # not Linux, or not permitted: only a nicety
        pass


class Renderer:
    """Renders a registry off the event loop on a single dedicated thread."""

    def __init__(self, registry: CollectorRegistry, switch_interval: float | None = RENDER_SWITCH_INTERVAL,
                 pause_gc: bool = True):
        self.registry = registry
        self._guard = _RenderGuard(switch_interval, pause_gc)
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="metrics-render", initializer=_lower_thread_priority
        )

    def _render_in_thread(self, accept: str | None, accept_encoding: str | None) -> Rendered:
        with self._guard:
            return render(self.registry, accept, accept_encoding)

    async def render(self, accept: str | None, accept_encoding: str | None) -> Rendered:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._render_in_thread, accept, accept_encoding)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
