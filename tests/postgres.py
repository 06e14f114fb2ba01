"""A throwaway PostgreSQL server for the tests: Debian's real binaries, never a mock.

The server refuses to run as root, so as root its temp dir is chowned to
``postgres`` and initdb/pg_ctl run through ``runuser -u postgres --``.
Local socket: trust (the superuser sets things up); TCP on 127.0.0.1:
scram-sha-256, so the application role ``clary`` logs in with its password
as the exporter will. Durability is off (fsync, full pages): tests only.

Missing binaries fail the tests that need them, saying to run ``make
system-deps`` (``make test`` does).

- :func:`start` / :meth:`Server.stop`: one server (``running()`` as a block);
  :func:`start` first stops and removes the servers of test processes that
  died without stopping theirs (:func:`reap_orphans`);
- :func:`server`: the process's lazily started server, stopped at exit, for
  helpers outside fixtures (fixtures ``postgres_server``, ``database_url``);
- :meth:`Server.fresh_database` / :func:`fresh_database`: a new empty
  database owned by ``clary``; its URL.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tests import support

LOOPBACK = "127.0.0.1"
APP_ROLE = "clary"
SUPERUSER = "postgres"
START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0
TOOLS = ("initdb", "pg_ctl", "postgres")
ROOT_PREFIX = "clary-pg-"  # each server's temp dir: tempfile.gettempdir()/clary-pg-*
OWNER_FILE = "owner.pid"  # in it: the test process that started the server
LEGACY_ORPHAN_AGE = 6 * 3600.0  # a root without an owner file is an orphan once this old
SETTINGS = {  # tests only: durability off for speed
    "listen_addresses": LOOPBACK, "fsync": "off", "synchronous_commit": "off",
    "full_page_writes": "off", "max_connections": "200",
}


class PostgresError(RuntimeError):
    """The server could not be set up or started; the message carries the server log tail."""


def _unavailable(reason: str) -> NoReturn:
    support.cannot_run_here(reason, "run `make system-deps` to install Debian's postgresql")


def _has_tools(folder: str | Path) -> bool:
    return all(os.access(Path(folder, tool), os.X_OK) for tool in TOOLS)


def find_bindir() -> Path | None:
    """Folder with initdb, pg_ctl and postgres: Debian's 15, ``pg_config --bindir``, PATH, any Debian version."""
    candidates = ["/usr/lib/postgresql/15/bin"]
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10,
                                 stdin=subprocess.DEVNULL, check=False).stdout.strip()
            if out:
                candidates.append(out)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
                         reverse=True)
    return next((Path(c) for c in candidates if _has_tools(c)), None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no server log: {exc})"


@dataclass
class Server:
    """A running server: loopback TCP ``port`` for ``clary``, the socket in ``socket_dir`` for the superuser."""

    bindir: Path
    root: Path  # temp dir holding data/, the socket and server.log
    port: int
    password: str = field(repr=False)  # the clary role's
    admin_password: str = field(default="", repr=False)  # the postgres superuser's, for TCP
    as_postgres: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def url(self, dbname: str, password: str | None = None) -> str:
        """``postgresql://clary:<pw>@127.0.0.1:<port>/<dbname>``; ``password`` overrides (a wrong one, say)."""
        return f"postgresql://{APP_ROLE}:{password or self.password}@{LOOPBACK}:{self.port}/{dbname}"

    def admin_url(self, dbname: str = "postgres") -> str:
        """The superuser's URL over TCP (scram), for tools that need one; :meth:`admin` is the socket way."""
        return f"postgresql://{SUPERUSER}:{self.admin_password}@{LOOPBACK}:{self.port}/{dbname}"

    def admin(self, dbname: str = "postgres") -> psycopg.Connection:
        """An autocommit superuser connection over the local socket (trust)."""
        return psycopg.connect(host=str(self.socket_dir), port=self.port, user=SUPERUSER, dbname=dbname,
                               autocommit=True, connect_timeout=10)

    def fresh_database(self, name: str | None = None) -> str:
        """Create an empty database owned by ``clary`` (a unique name unless given); its URL."""
        name = name or f"clary_test_{uuid.uuid4().hex[:16]}"
        with self._lock, self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8'").format(
                sql.Identifier(name), sql.Identifier(APP_ROLE)))
        return self.url(name)

    def drop_database(self, name_or_url: str) -> None:
        """Drop a database made by :meth:`fresh_database`, closing any connection still open on it."""
        name = conninfo_to_dict(name_or_url)["dbname"] if "://" in name_or_url else name_or_url
        with self._lock, self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def _run(self, *cmd: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        return _run(self.bindir, self.root, self.as_postgres, *cmd, timeout=timeout)

    def stop(self) -> None:
        """``pg_ctl stop -m fast`` (SIGKILL to the postmaster if that fails), then remove the temp dir."""
        try:
            if (self.data_dir / "postmaster.pid").exists():
                try:
                    result = self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "20",
                                       timeout=30)
                    stopped = result.returncode == 0
                except subprocess.TimeoutExpired:
                    stopped = False
                if not stopped:
                    _kill_postmaster(self.data_dir)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _kill_postmaster(data_dir: Path) -> None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)


def _run(bindir: Path, cwd: Path, as_postgres: bool, tool: str, *args: str,
         timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
    """One of the server's tools, as ``postgres`` when we are root; bounded, no PG* variables inherited."""
    cmd = [str(bindir / tool), *args]
    if as_postgres:
        cmd = ["runuser", "-u", SUPERUSER, "--", *cmd]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


def _orphaned(root: Path, now: float) -> bool:
    """A server root whose test process is gone: SIGKILLed (no atexit) or a machine that went away."""
    try:
        return not support.alive(int((root / OWNER_FILE).read_text()))
    except (OSError, ValueError):  # no owner recorded: an old layout, or one being made right now
        with contextlib.suppress(OSError):
            return now - root.stat().st_mtime > LEGACY_ORPHAN_AGE
        return False


def reap_orphans(bindir: Path, as_postgres: bool) -> list[Path]:
    """Stop and remove the servers that killed test processes left behind (their roots); those removed.

    A test process SIGKILLed (a CI timeout, ``kill -9`` of pytest) never runs its atexit stop, and
    ``pg_ctl`` daemonises the postmaster, so the server and its temp dir would stay for good.
    """
    now, reaped = time.time(), []
    for root in Path(tempfile.gettempdir()).glob(f"{ROOT_PREFIX}*"):
        if not root.is_dir() or not _orphaned(root, now):
            continue
        data = root / "data"
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                _run(bindir, root, as_postgres, "pg_ctl", "stop", "-D", str(data), "-m", "immediate", "-w",
                     "-t", "10", timeout=20)
            if (data / "postmaster.pid").exists():
                _kill_postmaster(data)
        shutil.rmtree(root, ignore_errors=True)
        reaped.append(root)
    return reaped


def start(timeout: float = START_TIMEOUT) -> Server:
    """initdb a temp cluster, start it on a free loopback port, create the ``clary`` role; :func:`_unavailable`
    when the binaries are missing, :class:`PostgresError` (with the log tail) when it does not come up."""
    bindir = find_bindir()
    if bindir is None:
        _unavailable("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in /usr/lib/postgresql/*/bin,"
                     " `pg_config --bindir` or PATH")
    as_postgres = os.geteuid() == 0
    if as_postgres:
        if shutil.which("runuser") is None:
            _unavailable("running as root but runuser(1) is missing")
        try:
            owner = pwd.getpwnam(SUPERUSER)
        except KeyError:
            _unavailable("running as root but there is no `postgres` user to run the server as")
    reap_orphans(bindir, as_postgres)
    root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX))
    (root / OWNER_FILE).write_text(str(os.getpid()))
    server = Server(bindir=bindir, root=root, port=0, password=secrets.token_urlsafe(18),
                    admin_password=secrets.token_urlsafe(18), as_postgres=as_postgres)
    try:
        if as_postgres:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        init = server._run("initdb", "-D", str(server.data_dir), "-U", SUPERUSER, "--auth-local=trust",
                           "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync")
        if init.returncode != 0:
            raise PostgresError(f"initdb failed (exit {init.returncode}): {init.stderr.strip()[-2000:]}")
        _start_on_free_port(server, timeout)
        with server.admin() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(APP_ROLE), sql.Literal(server.password)))
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(SUPERUSER), sql.Literal(server.admin_password)))
    except BaseException:
        server.stop()
        raise
    return server


def _start_on_free_port(server: Server, timeout: float, attempts: int = 3) -> None:
    """pg_ctl start, waiting at most ``timeout``; another port when one was taken meanwhile (xdist workers)."""
    for attempt in range(attempts):
        server.port = _free_port()
        options = " ".join(f"-c {key}={value}" for key, value in
                           {**SETTINGS, "port": server.port, "unix_socket_directories": server.socket_dir}.items())
        deadline = time.monotonic() + timeout
        try:
            result = server._run("pg_ctl", "start", "-D", str(server.data_dir), "-l", str(server.log_path),
                                 "-w", "-t", str(int(timeout)), "-o", options, timeout=timeout + 10)
            ok = result.returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
        if ok and _wait_ready(server, deadline):
            return
        log = _log_tail(server.log_path)
        if "could not bind" in log and attempt + 1 < attempts:
            _kill_postmaster(server.data_dir)
            server.log_path.unlink(missing_ok=True)
            continue
        raise PostgresError(f"PostgreSQL did not come up within {timeout:.0f}s on port {server.port}; "
                            f"server log tail:\n{log}")


def _wait_ready(server: Server, deadline: float) -> bool:
    """Connect over the socket until it answers, or the deadline passes."""
    while True:
        try:
            with server.admin() as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)


@contextlib.contextmanager
def running(timeout: float = START_TIMEOUT) -> Iterator[Server]:
    """A server for the block, stopped and removed after it."""
    srv = start(timeout)
    try:
        yield srv
    finally:
        srv.stop()


_shared: Server | None = None
_shared_lock = threading.Lock()


def server() -> Server:
    """This process's server, started on first use and stopped at exit (shared with the fixtures)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = start()
            atexit.register(shutdown)
        return _shared


def shutdown() -> None:
    """Stop this process's server, if started; a later :func:`server` starts a new one."""
    global _shared
    with _shared_lock:
        srv, _shared = _shared, None
    if srv is not None:
        srv.stop()


def fresh_database(name: str | None = None) -> str:
    """A new empty database owned by ``clary`` on this process's server; its URL."""
    return server().fresh_database(name)
