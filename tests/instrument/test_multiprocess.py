"""Multiprocess library mode: 4 real gunicorn workers (aiohttp worker class)
running examples/multiprocess, and the helpers in exporter.instrument.multiprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from prometheus_client import Gauge
from prometheus_client.parser import text_string_to_metric_families

from exporter.instrument import multiprocess
from exporter.catalog import CATALOG, Kind
from exporter.instrument.metrics import MULTIPROCESS_MODES
from tests import support
from tests.support import ROOT

WORKERS = 4
DOC_ROUTE = "/api/v1/documents/{doc_type}"
MODEL_MEMORY = 100_000_000  # what each worker of the example reports for its model copy


def test_every_catalog_gauge_has_a_documented_multiprocess_mode():
    gauges = {s.name for s in CATALOG if s.kind is Kind.GAUGE and not s.collected}
    assert set(MULTIPROCESS_MODES) == gauges
    assert set(MULTIPROCESS_MODES.values()) <= set(Gauge._MULTIPROC_MODES)
    docs = (ROOT / "docs" / "deployment.md").read_text()  # section "Multiprocess workers"
    for name, mode in MULTIPROCESS_MODES.items():
        assert f"`{name}`" in docs and f"`{mode}`" in docs, name


def test_collecting_registry_needs_the_directory(monkeypatch):
    monkeypatch.delenv(multiprocess.ENV, raising=False)
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR is not set"):
        multiprocess.collecting_registry()
    # Set after prometheus_client was imported (as here): a clear error, not an empty /metrics.
    monkeypatch.setenv(multiprocess.ENV, "/nonexistent")
    with pytest.raises(RuntimeError, match="set after prometheus_client was imported"):
        multiprocess.collecting_registry()


def test_prepare_directory_removes_stale_files(tmp_path):
    (tmp_path / "counter_1.db").write_bytes(b"x")
    (tmp_path / "keep.txt").write_text("not ours")
    assert multiprocess.prepare_directory(tmp_path) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_sweep_dead_removes_live_gauges_of_exited_processes(tmp_path):
    """For process managers without a child-exit hook (uvicorn --workers)."""
    code = ("from prometheus_client import Gauge, Counter\n"
            "Gauge('g', 'g', multiprocess_mode='livesum').set(5)\n"
            "Gauge('m', 'm', multiprocess_mode='max').set(7)\n"
            "Counter('c', 'c').inc(3)\n"
            "import os; print(os.getpid())\n")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, multiprocess.ENV: str(tmp_path)},
                         capture_output=True, text=True, timeout=30, check=True)
    pid = int(out.stdout)
    assert (tmp_path / f"gauge_livesum_{pid}.db").exists()
    assert multiprocess.sweep_dead(tmp_path) == [pid]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"counter_{pid}.db", f"gauge_max_{pid}.db"]
    assert multiprocess.sweep_dead(tmp_path) == []


# --- 4 real workers ---------------------------------------------------------


class Service:
    def __init__(self, port: int, proc: subprocess.Popen, multiproc_dir: Path):
        self.base = f"http://{support.LOOPBACK}:{port}"
        self.proc = proc
        self.dir = multiproc_dir

    def workers(self) -> set[int]:
        return {c.pid for c in psutil.Process(self.proc.pid).children() if support.alive(c.pid)}

    def request(self, path: str, method: str = "GET", tier: str = "lite", timeout: float = 15) -> int:
        req = urllib.request.Request(self.base + path, method=method, data=b"" if method == "POST" else None,
                                     headers={"X-API-Key": f"example-{tier}-key", "Connection": "close"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            assert resp.status == 200
            return int(resp.headers["X-Worker-Pid"])

    def scrape(self) -> dict[tuple, float]:
        status, body = support.http_get(self.base + "/metrics")
        assert status == 200
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
        }


def _total(samples: dict[tuple, float], name: str, **match: str) -> float:
    return sum(v for (n, labels), v in samples.items()
               if n == name and all(dict(labels).get(k) == want for k, want in match.items()))


@pytest.fixture
def service(tmp_path):
    port = support.free_port()
    multiproc_dir = tmp_path / "multiproc"
    multiproc_dir.mkdir()
    (multiproc_dir / "counter_999999.db").write_bytes(b"stale")  # a previous run's: must be wiped
    env = {**os.environ, multiprocess.ENV: str(multiproc_dir), "BIND": f"{support.LOOPBACK}:{port}",
           "WEB_CONCURRENCY": str(WORKERS), "PYTHONPATH": str(ROOT)}
    log = open(tmp_path / "gunicorn.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "examples/multiprocess/gunicorn.conf.py"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    svc = Service(port, proc, multiproc_dir)
    try:
        def up():
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "gunicorn.log").read_text()[-2000:])
            return len(svc.workers()) == WORKERS and support.http_get(svc.base + "/whoami", timeout=1)[0] == 200

        support.wait_until(up, timeout=30, what="gunicorn with 4 workers")
        yield svc
    finally:
        workers = svc.workers() if proc.poll() is None else set()
        support.stop(proc, timeout=15)
        for pid in workers:
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()


def _send_until_every_worker_served(svc: Service, workers: set[int]) -> tuple[int, dict[int, int]]:
    """POST documents on fresh connections, 16 at a time, until all 4 workers
    served some (bounded: at most 2000). Returns (requests sent, per worker)."""
    per_worker: dict[int, int] = {}
    sent = 0
    with ThreadPoolExecutor(16) as pool:
        while sent < 2000 and (sent < 400 or set(per_worker) != workers):
            pids = list(pool.map(lambda _: svc.request("/api/v1/documents/pdf", "POST"), range(100)))
            sent += len(pids)
            for pid in pids:
                per_worker[pid] = per_worker.get(pid, 0) + 1
    return sent, per_worker


def test_totals_across_four_workers_equal_requests_sent(service):
    svc = service
    workers = svc.workers()
    assert len(workers) == WORKERS
    assert not (svc.dir / "counter_999999.db").exists()

    sent, per_worker = _send_until_every_worker_served(svc, workers)
    assert set(per_worker) == workers, per_worker  # 4 real processes did the work
    assert sum(per_worker.values()) == sent

    # Whichever worker answers the scrape, the totals are the sum over all four.
    for _ in range(5):
        samples = svc.scrape()
        assert _total(samples, "clary_http_requests_total", route=DOC_ROUTE, code="200", tier="lite") == sent
        assert _total(samples, "clary_http_request_duration_seconds_count", route=DOC_ROUTE) == sent
        assert _total(samples, "clary_http_request_duration_seconds_bucket", route=DOC_ROUTE, le="+Inf") == sent
        assert _total(samples, "clary_documents_processed_total", doc_type="pdf", outcome="success") == sent
        assert _total(samples, "clary_feature_uses_total", feature="ocr", outcome="success") == sent
        # Gauges: livesum adds the live workers, livemax does not multiply build_info.
        assert _total(samples, "clary_model_memory_bytes", model="layout-base") == WORKERS * MODEL_MEMORY
        assert _total(samples, "clary_exporter_build_info") == 1
        assert _total(samples, "clary_http_requests_in_flight") == 0
        # No pid label anywhere: every family is aggregated.
        assert not any("pid" in dict(labels) for (_, labels) in samples)

    # In-flight requests held open on several workers are summed.
    # Held long enough that a loaded CI machine still gets all six in flight together.
    holding, hold_seconds = 6, 8
    threads = [threading.Thread(target=svc.request, args=(f"/api/v1/wait?seconds={hold_seconds}",))
               for _ in range(holding)]
    for t in threads:
        t.start()
    try:
        support.wait_until(lambda: _total(svc.scrape(), "clary_http_requests_in_flight") == holding,
                           timeout=hold_seconds - 0.5, interval=0.1, what=f"{holding} requests in flight")
    finally:
        for t in threads:
            t.join(15)
    assert _total(svc.scrape(), "clary_http_requests_in_flight") == 0

    # A worker dies: gunicorn replaces it, child_exit drops its live gauges, its counts stay.
    victim = next(iter(workers))
    os.kill(victim, signal.SIGKILL)
    support.wait_until(lambda: len(svc.workers()) == WORKERS and victim not in svc.workers(),
                       timeout=30, what="replacement worker")
    support.wait_until(lambda: not list(svc.dir.glob(f"gauge_live*_{victim}.db")), timeout=10,
                       what="dead worker's live gauge files removed")
    assert (svc.dir / f"counter_{victim}.db").exists()
    support.wait_until(lambda: support.http_get(svc.base + "/whoami", timeout=1)[0] == 200, timeout=10,
                       what="service answers")
    # The new worker has loaded its model too (app factory ran): 4 live copies, not 5.
    def four_live_copies():
        samples = svc.scrape()
        return samples if _total(samples, "clary_model_memory_bytes", model="layout-base") == WORKERS * MODEL_MEMORY else None

    samples = support.wait_until(four_live_copies, timeout=10, what="model memory of 4 live workers")
    assert _total(samples, "clary_http_requests_total", route=DOC_ROUTE, code="200", tier="lite") == sent
    assert _total(samples, "clary_documents_processed_total", doc_type="pdf", outcome="success") == sent
    assert _total(samples, "clary_exporter_build_info") == 1

    # More traffic after the restart still adds up.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: svc.request("/api/v1/documents/pdf", "POST"), range(40)))
    samples = svc.scrape()
    assert _total(samples, "clary_http_requests_total", route=DOC_ROUTE, code="200", tier="lite") == sent + 40
