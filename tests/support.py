"""Helpers for end-to-end tests: real processes on loopback, always bounded.

Every process started here has a deadline for coming up and is killed in a
``finally`` (context managers), so a failing test never leaves one behind.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import psutil
import pytest
import yaml

from exporter import stack
from tests import store_backend

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"


def cannot_run_here(reason: str, fix: str) -> NoReturn:
    """A test whose real component (a binary, a capability) is missing here fails, naming it and the fix.

    Never a skip: ``make test`` installs what the suite needs and CI runs as
    root, so a missing piece is a broken set-up, and a skip would let the
    suite pass without having run the test.
    """
    pytest.fail(f"{reason}; {fix}", pytrace=False)


def free_port() -> int:
    return stack.free_port(LOOPBACK)


def binary(*names: str) -> str:
    """Path of the first binary found; fails (not skips) when none is installed."""
    try:
        return stack.find_binary(*names)
    except stack.StackError as exc:
        raise AssertionError(f"{exc}; `make test` installs them") from None


def http_get(url: str, timeout: float = 5.0, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_request(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None,
                 timeout: float = 10.0) -> tuple[int, str, bytes]:
    """Any method, a JSON body; (status, content type without parameters, body), errors included."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.headers.get_content_type(), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_content_type(), exc.read()


def wait_until(check: Callable[[], object], timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll ``check`` until it returns a truthy value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError, KeyError) as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


def _ready(url: str) -> bool:
    status, _ = http_get(url, timeout=1)
    return status == 200


@contextlib.contextmanager
def running(cmd: list[str], ready_url: str, timeout: float = 30, env: dict | None = None,
            log_path: Path | None = None) -> Iterator[subprocess.Popen]:
    """Start a process, wait for ``ready_url`` to answer 200, stop it afterwards."""
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, cwd=ROOT)
    try:
        def up():
            if proc.poll() is not None:
                tail = log_path.read_text()[-2000:] if log_path else ""
                raise AssertionError(f"{cmd[0]} exited with {proc.returncode}: {tail}")
            return _ready(ready_url)

        wait_until(up, timeout, what=f"{Path(cmd[0]).name} at {ready_url}")
        yield proc
    finally:
        stop(proc)
        if log_path:
            log.close()


def stop(proc: subprocess.Popen, timeout: float = 10) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


_DATA_DIRS: list[str] = []


def _fresh_data_dir() -> str:
    """A directory of its own under one per-session temporary root (removed at exit)."""
    if not _DATA_DIRS:
        _DATA_DIRS.append(tempfile.mkdtemp(prefix="clary-test-data-"))
        atexit.register(shutil.rmtree, _DATA_DIRS[0], True)
    return tempfile.mkdtemp(dir=_DATA_DIRS[0])


def exporter_cmd(*args: str) -> list[str]:
    """``clary-exporter ARGS``, its state in a fresh directory unless ``--data-dir`` is given.

    Never the default ``./data`` of the repository: every test (and every
    HMAC secret) would share it, and the store refuses data of another secret.
    With ``CLARY_TEST_STORE=postgres`` (tests/store_backend.py) it also gets
    ``--database-url``: the data dir's own PostgreSQL database, unless the
    args name one; ``purge`` gets one only where an exporter on its data dir had one.
    """
    purge = args[:1] == ("purge",)
    data_dir = _option(args, "--data-dir")
    if not purge and data_dir is None:
        data_dir = _fresh_data_dir()
        args = (*args, "--data-dir", data_dir)
    if store_backend.postgres() and _option(args, "--database-url") is None:
        # purge --data-dir DIR: the database an exporter on DIR used, if any (else DIR's file, as asked)
        url = store_backend.known_url(data_dir) if purge else store_backend.url_for(data_dir)
        if url:
            args = (*args, "--database-url", url)
    return [sys.executable, "-m", "exporter.cli", *args]


def _option(args: tuple[str, ...], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in ``args``; None when absent."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
    return None


@contextlib.contextmanager
def exporter(port: int, *args: str, log_path: Path | None = None, env: dict | None = None):
    cmd = exporter_cmd("--listen-address", f"{LOOPBACK}:{port}", *args)
    with running(cmd, f"http://{LOOPBACK}:{port}/readyz", env=env, log_path=log_path) as proc:
        yield proc


@dataclass
class Prometheus:
    url: str
    workdir: Path

    def query(self, expr: str, time_: float | None = None) -> list[dict]:
        params = {"query": expr}
        if time_ is not None:
            params["time"] = str(time_)
        status, body = http_get(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}")
        payload = json.loads(body)
        if status != 200 or payload.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed ({status}): {payload.get('error')}")
        return payload["data"]["result"]

    def api(self, path: str) -> dict:
        status, body = http_get(f"{self.url}/api/v1/{path}")
        assert status == 200, body[:500]
        return json.loads(body)["data"]


@contextlib.contextmanager
def prometheus(targets: list[str], rule_files: list[Path] = (), scrape_interval: str = "1s",
               alertmanager: str | None = None) -> Iterator[Prometheus]:
    """A real Prometheus scraping ``targets`` (host:port), in a temp dir."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="clary-prom-") as tmp:
        workdir = Path(tmp)
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [{"job_name": "clary-exporter", "static_configs": [{"targets": targets}]}],
            "rule_files": [str(p) for p in rule_files],
        }
        if alertmanager:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        cmd = [
            binary("prometheus"),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--web.enable-lifecycle",
        ]
        url = f"http://{LOOPBACK}:{port}"
        with running(cmd, f"{url}/-/ready", log_path=workdir / "prometheus.log"):
            yield Prometheus(url, workdir)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs and is not a zombie. A process may exit between
    listing it and reading its state; that counts as gone, not as an error.
    One whose state this user may not read exists, so it counts as running."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def gpu_present() -> bool:
    """Whether NVML finds a GPU here (the hardware families are only expected then)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


# --- more than one process at a time ---------------------------------------------
#
# Prometheus hands discovered targets (static_configs too) to its scrape and
# notifier managers at most every 5 s, so nothing is scraped, and no alert
# reaches an Alertmanager, until about 5 s after it started; no flag shortens
# that in 2.42. Tests that need several processes therefore start every
# Prometheus first (ports are known up front), then what it scrapes, and let
# those waits overlap instead of adding up.


@contextlib.contextmanager
def prometheus_from(config: dict, workdir: Path, *flags: str) -> Iterator[Prometheus]:
    """A real Prometheus running ``config`` exactly as given (written to
    ``workdir/prometheus.yml``), with extra command-line ``flags``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    cmd = [
        binary("prometheus"),
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={LOOPBACK}:{port}",
        *flags,
    ]
    with running(cmd, f"{url}/-/ready", log_path=workdir / "prometheus.log"):
        yield Prometheus(url, workdir)


@contextlib.contextmanager
def alertmanager(config: dict, workdir: Path, port: int | None = None) -> Iterator[str]:
    """A real Alertmanager (no clustering) running ``config``; yields its URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = port or free_port()
    url = f"http://{LOOPBACK}:{port}"
    cmd = [
        binary("alertmanager", "prometheus-alertmanager"),
        f"--config.file={workdir / 'alertmanager.yml'}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address={LOOPBACK}:{port}",
        "--cluster.listen-address=",
    ]
    with running(cmd, f"{url}/-/ready", log_path=workdir / "alertmanager.log"):
        yield url


_DURATION_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
                      "y": 31_536_000_000}
_DURATION = re.compile(r"(\d+)(ms|[smhdwy])")


def duration_ms(text: str) -> int:
    """A Prometheus/Alertmanager duration ("1h30m", "10s", "0s", "500ms") in milliseconds."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _DURATION_UNITS_MS[u] for n, u in parts)


def scaled_duration(text: str, factor: float) -> str:
    """``text`` divided by ``factor``, as a duration both Prometheus and Alertmanager parse."""
    return f"{round(duration_ms(text) / factor)}ms"
