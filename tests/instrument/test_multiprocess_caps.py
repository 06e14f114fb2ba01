"""Multiprocess mode: the series budget holds for all worker processes together.

prometheus_client sums every worker's files, so a budget kept per process
would let N workers expose N x budget series. Four real processes flood one
family at once, each with routes of its own; the aggregated exposition stays
within the budget.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.multiprocess import MultiProcessCollector

from exporter.catalog import spec
from exporter.instrument import multiprocess
from exporter.labels import SHARED_SERIES_GLOB, LabelGuard
from tests.support import ROOT

HTTP = "clary_http_requests_total"
WORKERS = 4
ROUTES_EACH = 1200  # 4 x 1200 distinct routes: more than twice the budget of 2000

WORKER = """
import sys
from prometheus_client import CollectorRegistry, Counter
from exporter.instrument.hashing import Hasher
from exporter.instrument.recorder import Recorder

worker, routes = int(sys.argv[1]), int(sys.argv[2])
letters = "abcdefghijklmnopqrstuvwxyz"
rec = Recorder(CollectorRegistry(), Hasher("multiprocess-caps-secret"))
for i in range(routes):
    word = letters[worker] + "".join(letters[(i // 26 ** k) % 26] for k in range(3))
    rec.http_request("lite", "GET", f"/w/{word}", 200 + i % 3, 0.01)
"""


def run_workers(directory) -> None:
    env = {**os.environ, multiprocess.ENV: str(directory), "PYTHONPATH": str(ROOT)}

    def one(worker: int) -> None:
        subprocess.run([sys.executable, "-c", WORKER, str(worker), str(ROUTES_EACH)], env=env, cwd=ROOT,
                       check=True, timeout=120, capture_output=True)

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(one, range(WORKERS)))


def test_four_workers_stay_within_one_budget(tmp_path):
    run_workers(tmp_path)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    samples = [s for family in registry.collect() for s in family.samples if s.name == HTTP]
    routes = {s.labels["route"] for s in samples}
    assert len({tuple(sorted(s.labels.items())) for s in samples}) <= spec(HTTP).budget
    assert len(routes) > spec(HTTP).budget * 0.8  # the workers filled the budget together
    assert "other" in routes
    assert sum(s.value for s in samples) == WORKERS * ROUTES_EACH, "folding loses no request"
    overflow = sum(s.value for family in registry.collect() for s in family.samples
                   if s.name == "clary_exporter_label_overflow_total" and s.labels["metric"] == HTTP)
    assert overflow > 0
    assert (tmp_path / SHARED_SERIES_GLOB.replace("*", HTTP)).exists()


def test_prepare_directory_forgets_the_shared_series(tmp_path):
    shared = tmp_path / SHARED_SERIES_GLOB.replace("*", HTTP)
    shared.write_text('["lite", "GET", "/x", "200"]\n')
    multiprocess.prepare_directory(tmp_path)
    assert not shared.exists()


def test_a_line_cut_short_by_a_dead_worker_is_skipped(tmp_path):
    """A worker killed mid-write leaves half a line: the next one to admit a series closes and skips it."""
    family = spec(HTTP)
    shared = tmp_path / SHARED_SERIES_GLOB.replace("*", HTTP)
    shared.write_text('["lite", "GET", "/kept", "200"]\n["lite", "GET", "/cut')
    registry = CollectorRegistry()
    guard = LabelGuard(Counter("ovf", "Overflow.", ["metric", "label"], registry=registry), shared_dir=tmp_path)
    assert guard.values(family, ("lite", "GET", "/new", 200)) == ("lite", "GET", "/new", "200")
    assert guard.series(family) == 2  # /kept (another worker's) and /new
    lines = shared.read_text().splitlines()
    assert lines[0] == '["lite", "GET", "/kept", "200"]' and lines[-1] == '["lite", "GET", "/new", "200"]'
