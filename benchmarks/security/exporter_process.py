"""An exporter process for the attack scripts (gzip_bomb, log_secrets, slow_clients).

Started from this tree or, with ``--tree DIR``, from another checkout (its own
``exporter`` package first on PYTHONPATH, nothing written into it), on a free
127.0.0.1 port with a temporary data directory, its stderr in a file; always
stopped (SIGTERM, then SIGKILL) when the ``with`` block ends. Its CPU time is
read from /proc, summed over its threads in nanoseconds (schedstat), so a few
milliseconds are measurable.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HMAC_SECRET = "attack-hmac-secret-0123456789abcdef"
INGEST_TOKEN = "attack-ingest-token-0123456789"
START_SECONDS = 30.0


def add_tree_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tree", type=Path, default=ROOT, metavar="DIR",
                        help="checkout whose exporter to attack (default: this one), e.g. /tmp/base-1c80776")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Exporter:
    proc: subprocess.Popen
    port: int
    log_path: Path
    final_log: str | None = None  # the whole log, kept when the process has stopped (its directory is gone)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """CPU time of every thread of the process so far."""
        total = 0
        task_dir = Path(f"/proc/{self.proc.pid}/task")
        for task in task_dir.iterdir():
            with contextlib.suppress(OSError):
                total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9

    def settled_cpu(self, quiet: float = 0.5, limit: float = 20.0) -> float:
        """CPU seconds once the process has stopped burning CPU (no more than 2 ms over ``quiet`` s)."""
        deadline = time.monotonic() + limit
        last = self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.cpu_seconds()
            if now - last < 0.002:
                return now
            last = now
        return last

    def log(self) -> str:
        return self.final_log if self.final_log is not None else self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def exporter(tree: Path, env: dict[str, str] | None = None, config: dict | None = None) -> Iterator[Exporter]:
    """``clary-exporter`` from ``tree`` with an ingest token, collectors off, and ``env``/``config`` on top."""
    with tempfile.TemporaryDirectory(prefix="clary-attack-") as tmp:
        work = Path(tmp)
        config_path = work / "clary.yml"
        config_path.write_text(yaml.safe_dump({"collectors": {"system": False, "gpu": False}, **(config or {})}))
        port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("CLARY_")}
        full_env = {**base, "PYTHONPATH": str(tree.resolve()), "PYTHONDONTWRITEBYTECODE": "1",
                    "CLARY_HMAC_SECRET": HMAC_SECRET, "CLARY_INGEST_TOKENS": INGEST_TOKEN,
                    "CLARY_DATA_DIR": str(work / "data"), "CLARY_LISTEN_ADDRESS": f"127.0.0.1:{port}",
                    "CLARY_CONFIG": str(config_path), **(env or {})}
        log_path = work / "exporter.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "exporter.cli"], cwd=work, env=full_env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        served = Exporter(proc, port, log_path)
        try:
            _wait_ready(served)
            yield served
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            served.final_log = log_path.read_text(errors="replace")


def _wait_ready(served: Exporter) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if served.proc.poll() is not None:
            raise SystemExit(f"the exporter exited with {served.proc.returncode}: {served.log()[-2000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(served.url + "/readyz", timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"the exporter did not answer /readyz within {START_SECONDS:.0f} s")


def raw_request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"",
                length: int | None = None) -> bytes:
    """An HTTP/1.1 request's bytes, written by hand: a header may hold what a client library refuses to send."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or length is not None:
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
