"""Bad storage and a changed HMAC secret, against a real exporter (issue 19, items 2 and 3).

Each fault is real: garbage in place of ``clary.db``, a directory in its
place, a data dir that is a regular file or sits under one, a read-only
tmpfs and a full one (both need root: ``mount``), and, while the exporter
runs, an immutable database (``chattr +i``), a full disk, a deleted file, a
lock held by another process. Printed per fault:

- at start: the exit code and the number of stderr lines (and whether there
  is a traceback), or ``serving`` when it started anyway;
- at run time: status and content type of ``POST /api/v1/feedback``, the
  status of ``/readyz`` and ``/metrics``, ``/readyz`` once the fault is
  gone (within 15 s), and the exit code of SIGINT;
- ``clary-exporter purge`` on that data dir (and on a missing one).

Then the secret: data written with one secret, the exporter restarted with
another: whether it starts, what ``DELETE /api/v1/users/alice`` removes and
whether an opted-out user's new feedback carries the user again; and the
same with the old secret given as a previous secret (where supported).

Usage: flock /tmp/clary-bench.lock .venv/bin/python -m benchmarks.security.storage [--tree /tmp/base-1c80776]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRET, NEW_SECRET = "attack-hmac-secret-0123456789abcdef", "attack-new-secret-0123456789abcdef"
ADMIN = {"Authorization": "Bearer attack-admin-token-0123456789"}
KEYS = {"key-alice-0123456789": {"tier": "lite", "user": "alice"}, "key-bob-0123456789": {"tier": "lite", "user": "bob"}}
ALICE, BOB = {"X-API-Key": "key-alice-0123456789"}, {"X-API-Key": "key-bob-0123456789"}
FEEDBACK = {"type": "general", "rating": 4, "text": "attack"}


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None,
            timeout: float = 10.0) -> tuple[int | str, str, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers or {}),
                                    timeout=timeout) as resp:
            return resp.status, resp.headers.get_content_type(), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_content_type(), exc.read()
    except (OSError, TimeoutError) as exc:
        return f"no answer ({type(exc).__name__})", "-", b""


class Server:
    """``clary-exporter`` from ``tree`` on ``data_dir``; started by :meth:`start`, stopped by :meth:`stop`."""

    def __init__(self, tree: Path, work: Path, data_dir: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = work / "clary.yml"
        config.write_text(yaml.safe_dump({"collectors": {"system": False, "gpu": False}, "api_keys": KEYS,
                                          "admin_token": ADMIN["Authorization"].split()[1]}))
        base = {k: v for k, v in os.environ.items() if not k.startswith("CLARY_")}
        self.env = {**base, "PYTHONPATH": str(tree.resolve()), "PYTHONDONTWRITEBYTECODE": "1",
                    "CLARY_HMAC_SECRET": SECRET, **(env or {})}
        self.args = [sys.executable, "-m", "exporter.cli", "--config", str(config), "--data-dir", str(data_dir),
                     "--listen-address", f"127.0.0.1:{self.port}"]
        self.tree, self.stderr = tree, work / f"stderr-{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> int | None:
        """None once /readyz answers; the exit code when it exits first."""
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(self.args, cwd=self.tree, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return self.proc.returncode
            if request(self.url + "/readyz", timeout=1)[0] in (200, 503):
                return None
            time.sleep(0.2)
        raise SystemExit("the exporter neither served nor exited within 30 s")

    def stop(self, sig: int = signal.SIGINT) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(45)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def err_lines(self) -> str:
        text = self.stderr.read_text(errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        return f"{len(lines)} line{'s' * (len(lines) != 1)}{', traceback' if 'Traceback' in text else ''}"

    def purge(self, data_dir: Path) -> int:
        return subprocess.run([*self.args[:3], "purge", "--data-dir", str(data_dir)], cwd=self.tree, env=self.env,
                              capture_output=True, timeout=60, check=False).returncode


def _run(*cmd: str) -> bool:
    return subprocess.run(cmd, capture_output=True, timeout=30, check=False).returncode == 0


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[bool]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield mounted
    finally:
        if mounted:
            _run("umount", "-l", str(path))


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
    return filler


# --- at start --------------------------------------------------------------------------------------------------

def start_faults(work: Path) -> Iterator[tuple[str, Path, Callable[[], None]]]:
    """(name, data dir, undo) with the fault in place."""
    d = work / "garbage"
    d.mkdir()
    (d / "clary.db").write_bytes(b"not a database\n" * 500)
    yield "corrupt clary.db (garbage)", d, lambda: None
    d = work / "dirdb"
    (d / "clary.db").mkdir(parents=True)
    yield "directory in place of clary.db", d, lambda: None
    (work / "file").write_text("x")
    yield "data dir is a regular file", work / "file", lambda: None
    yield "data dir under a regular file", work / "file" / "sub", lambda: None


def at_start(tree: Path, work: Path) -> None:
    print("\n## Storage faults at start\n")
    print("| fault | start | POST /api/v1/feedback | SIGINT | purge |")
    print("|---|---|---|---|---|")

    def one(name: str, data_dir: Path) -> None:
        server = Server(tree, work, data_dir)
        code = server.start()
        if code is not None:
            print(f"| {name} | exit {code}, {server.err_lines()} | - | - | exit {server.purge(data_dir)} |")
            return
        status, ctype, _ = request(server.url + "/api/v1/feedback", "POST", FEEDBACK, ALICE)
        stopped = server.stop()
        print(f"| {name} | serving | {status} {ctype} | exit {stopped}, {server.err_lines()} | "
              f"exit {server.purge(data_dir)} |")

    for name, data_dir, _ in start_faults(work):
        one(name, data_dir)
    with tmpfs(work / "ro", "1m") as mounted:
        if mounted and _run("mount", "-o", "remount,ro", str(work / "ro")):
            one("read-only file system", work / "ro")
        else:
            print("| read-only file system | skipped: mount needs root |  |  |  |")
    with tmpfs(work / "full", "256k") as mounted:
        if mounted:
            fill(work / "full")
            one("full disk", work / "full")
        else:
            print("| full disk | skipped: mount needs root |  |  |  |")
    server = Server(tree, work, work / "missing")
    print(f"\n`purge` on a missing data dir: exit {server.purge(work / 'missing')}")


# --- at run time -----------------------------------------------------------------------------------------------

def _feedback_rows(data_dir: Path) -> int:
    with contextlib.closing(sqlite3.connect(data_dir / "clary.db")) as conn:
        return conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0]


def _immutable(data_dir: Path, on: bool) -> None:
    # Not clary.db-shm: SQLite maps it, and a write to an immutable mapping is SIGBUS.
    _run("chattr", "+i" if on else "-i", *[str(data_dir / n) for n in ("clary.db", "clary.db-wal")
                                            if (data_dir / n).exists()])


def run_faults(work: Path) -> Iterator[tuple[str, Path, Callable[[], None], Callable[[], None]]]:
    """(name, data dir, inject, undo), each data dir empty until its exporter starts."""
    d = work / "rt-immutable"
    yield "database read-only (chattr +i)", d, lambda: _immutable(d, True), lambda: _immutable(d, False)
    gone = work / "rt-deleted"
    backup = work / "rt-deleted-backup.db"

    def delete() -> None:
        with contextlib.closing(sqlite3.connect(gone / "clary.db")) as conn:
            conn.execute(f"VACUUM INTO '{backup}'")
        for name in ("clary.db", "clary.db-wal", "clary.db-shm"):
            (gone / name).unlink(missing_ok=True)

    yield "database file deleted, then restored", gone, delete, lambda: os.replace(backup, gone / "clary.db")
    locked = work / "rt-locked"
    holder: list[sqlite3.Connection] = []

    def lock() -> None:
        holder.append(sqlite3.connect(locked / "clary.db", isolation_level=None))
        holder[0].execute("BEGIN EXCLUSIVE")

    yield "locked by another process", locked, lock, lambda: holder.pop().close()


def at_run_time(tree: Path, work: Path) -> None:
    print("\n## Storage faults while running\n")
    print("| fault | POST /api/v1/feedback | /readyz | /metrics | /readyz once fixed | SIGINT | 201s lost |")
    print("|---|---|---|---|---|---|---|")

    def one(name: str, data_dir: Path, inject: Callable[[], None], undo: Callable[[], None]) -> None:
        server = Server(tree, work, data_dir)
        if server.start() is not None:
            print(f"| {name} | did not start: {server.err_lines()} |  |  |  |  |  |")
            return
        acknowledged = request(server.url + "/api/v1/feedback", "POST", FEEDBACK, ALICE)[0] == 201
        inject()
        started = time.monotonic()
        status, ctype, _ = request(server.url + "/api/v1/feedback", "POST", FEEDBACK, ALICE, timeout=40)
        took = f" after {time.monotonic() - started:.0f} s" if time.monotonic() - started > 2 else ""
        acknowledged += status == 201
        ready, metrics = request(server.url + "/readyz")[0], request(server.url + "/metrics")[0]
        undo()
        deadline, fixed = time.monotonic() + 15, None
        while time.monotonic() < deadline and (fixed := request(server.url + "/readyz")[0]) != 200:
            time.sleep(0.5)
        stopped = server.stop()
        lost = acknowledged - _feedback_rows(data_dir)
        print(f"| {name} | {status} {ctype}{took} | {ready} | {metrics} | {fixed} | exit {stopped}, "
              f"{server.err_lines()} | {max(lost, 0)} |")

    for name, data_dir, inject, undo in run_faults(work):
        one(name, data_dir, inject, undo)
    with tmpfs(work / "rt-full", "2m") as mounted:
        if not mounted:
            print("| full disk | skipped: mount needs root |  |  |  |  |  |")
            return
        filler: list[Path] = []
        one("full disk", work / "rt-full", lambda: filler.append(fill(work / "rt-full")),
            lambda: filler.pop().unlink())


# --- the HMAC secret -------------------------------------------------------------------------------------------

def _after_restart(server: Server) -> str:
    """What DELETE of alice removes, and whether bob (opted out before) is attributed again."""
    _, _, body = request(server.url + "/api/v1/users/alice", "DELETE", headers=ADMIN)
    removed = json.loads(body).get("total", body.decode()[:60]) if body.startswith(b"{") else body[:60]
    request(server.url + "/api/v1/feedback", "POST", {**FEEDBACK, "text": "bob-after"}, BOB)
    _, _, body = request(server.url + "/api/v1/feedback?limit=50", headers=ADMIN)
    bob = [i for i in json.loads(body)["items"] if i["text"] == "bob-after"]
    tracked = "yes" if bob and bob[0]["user_hash"] else "no"
    return f"serving; DELETE alice removed {removed}; opted-out bob tracked again: {tracked}"


def secret_change(tree: Path, work: Path) -> None:
    print("\n## Restart with another HMAC secret\n")
    data = work / "secret"
    first = Server(tree, work, data)
    assert first.start() is None, first.err_lines()
    assert request(first.url + "/api/v1/feedback", "POST", FEEDBACK, ALICE)[0] == 201
    assert request(first.url + "/api/v1/users/bob/opt-out", "POST", headers=ADMIN)[0] == 200
    first.stop(signal.SIGTERM)
    for label, env in (("another secret", {"CLARY_HMAC_SECRET": NEW_SECRET}),
                       ("another secret + CLARY_HMAC_PREVIOUS_SECRETS=old",
                        {"CLARY_HMAC_SECRET": NEW_SECRET, "CLARY_HMAC_PREVIOUS_SECRETS": SECRET})):
        server = Server(tree, work, data, env)
        code = server.start()
        outcome = f"exit {code}, {server.err_lines()}" if code is not None else _after_restart(server)
        if code is None:
            server.stop(signal.SIGTERM)
        print(f"- {label}: {outcome}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, metavar="DIR",
                        help="checkout whose exporter to attack (default: this one), e.g. /tmp/base-1c80776")
    args = parser.parse_args()
    print(f"tree: {args.tree}")
    with tempfile.TemporaryDirectory(prefix="clary-storage-attack-") as tmp:
        at_start(args.tree, Path(tmp))
        at_run_time(args.tree, Path(tmp))
        secret_change(args.tree, Path(tmp))


if __name__ == "__main__":
    main()
