"""The PostgreSQL harness itself (tests/postgres.py): the store tests trust it to give a real server,
isolated databases and real password checks, so it is tested like any other code."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests import postgres, support
from tests.support import wait_until


def test_the_server_is_a_real_postgresql_15_on_loopback(postgres_server):
    assert postgres_server.port > 0
    with postgres_server.admin() as conn:
        version = conn.execute("SHOW server_version_num").fetchone()[0]
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('listen_addresses', 'fsync', 'max_connections', 'port', 'password_encryption')").fetchall())
    assert int(version) >= 150000
    assert settings == {"listen_addresses": "127.0.0.1", "fsync": "off", "max_connections": "200",
                        "port": str(postgres_server.port), "password_encryption": "scram-sha-256"}


def test_a_fresh_database_connects_as_clary_and_round_trips_a_table(database_url, postgres_server):
    parts = conninfo_to_dict(database_url)
    assert (parts["user"], parts["host"], parts["port"]) == ("clary", "127.0.0.1", str(postgres_server.port))
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        user, db, owner = conn.execute(
            "SELECT current_user, current_database(), pg_get_userbyid(datdba) FROM pg_database"
            " WHERE datname = current_database()").fetchone()
        conn.execute("CREATE TABLE events (id serial PRIMARY KEY, name text NOT NULL, n integer)")
        conn.cursor().executemany("INSERT INTO events (name, n) VALUES (%s, %s)", [("é-ünïcode", 1), ("plain", 2)])
        conn.commit()
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        rows = conn.execute("SELECT name, n FROM events ORDER BY id").fetchall()
        encoding = conn.execute("SHOW server_encoding").fetchone()[0]
    assert (user, db, owner) == ("clary", parts["dbname"], "clary")
    assert rows == [("é-ünïcode", 1), ("plain", 2)]
    assert encoding == "UTF8"


def test_two_fresh_databases_are_isolated(postgres_server):
    first, second = postgres_server.fresh_database(), postgres_server.fresh_database()
    try:
        assert first != second
        with psycopg.connect(first, connect_timeout=10, autocommit=True) as conn:
            conn.execute("CREATE TABLE only_here (v integer)")
            conn.execute("INSERT INTO only_here VALUES (41)")
        with psycopg.connect(second, connect_timeout=10) as conn:
            tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
            with pytest.raises(psycopg.errors.UndefinedTable):
                conn.execute("SELECT v FROM only_here")
        assert tables == []
    finally:
        postgres_server.drop_database(first)
        postgres_server.drop_database(second)


def test_a_given_name_is_used_and_dropping_removes_it(postgres_server):
    url = postgres_server.fresh_database("clary_harness_named")
    assert conninfo_to_dict(url)["dbname"] == "clary_harness_named"
    with psycopg.connect(url, connect_timeout=10) as conn:  # left open: the drop must still succeed
        postgres_server.drop_database(url)
    with postgres_server.admin() as admin:
        left = admin.execute("SELECT count(*) FROM pg_database WHERE datname = 'clary_harness_named'").fetchone()
    assert left == (0,)
    assert conn.closed


def test_a_wrong_password_is_refused(database_url, postgres_server):
    wrong = postgres_server.url(conninfo_to_dict(database_url)["dbname"], password="not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=10)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres_server.admin_url(), password="not-the-password", connect_timeout=10)
    with psycopg.connect(postgres_server.admin_url(), connect_timeout=10) as conn:
        assert conn.execute("SELECT current_user, usesuper FROM pg_user WHERE usename = current_user").fetchone() \
            == ("postgres", True)


def test_the_module_server_is_the_fixture_server(postgres_server):
    """Helpers outside fixtures (``postgres.server()``) share the worker's one server, not a second one."""
    assert postgres.server() is postgres_server
    url = postgres.fresh_database()
    try:
        assert conninfo_to_dict(url)["port"] == str(postgres_server.port)
    finally:
        postgres_server.drop_database(url)


def test_a_separate_server_stops_and_leaves_nothing_behind():
    with postgres.running() as srv:
        root, data = srv.root, srv.data_dir
        pid = int((data / "postmaster.pid").read_text().split()[0])
        assert support.alive(pid)
        with psycopg.connect(srv.fresh_database(), connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not root.exists()
    assert wait_until(lambda: not support.alive(pid), timeout=10, what="the postmaster to exit")


def test_a_subprocess_gets_its_own_server_through_the_plain_function(postgres_server):
    """The atexit stop: a helper process using ``postgres.server()`` leaves no server or temp dir behind."""
    code = ("from tests import postgres; s = postgres.server(); import psycopg\n"
            "with psycopg.connect(postgres.fresh_database(), connect_timeout=10) as c: c.execute('SELECT 1')\n"
            "print(s.root, (s.data_dir / 'postmaster.pid').read_text().split()[0])\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=postgres.Path(__file__).parents[2],
                            capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    root, pid = result.stdout.split()
    assert not postgres.Path(root).exists()
    assert wait_until(lambda: not support.alive(int(pid)), timeout=10, what="the postmaster to exit")


@pytest.mark.parametrize("ci", ["true", ""], ids=["ci", "elsewhere"])
def test_missing_binaries_fail_the_test_everywhere_never_skip_it(monkeypatch, ci):
    monkeypatch.setattr(postgres, "find_bindir", lambda: None)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="not found.*; run `make system-deps`"):
        postgres.start()


def test_a_server_that_does_not_start_reports_its_log_and_cleans_up(monkeypatch):
    monkeypatch.setitem(postgres.SETTINGS, "max_connections", "lots")
    made, mkdtemp = [], postgres.tempfile.mkdtemp
    monkeypatch.setattr(postgres.tempfile, "mkdtemp", lambda **kw: made.append(mkdtemp(**kw)) or made[-1])
    with pytest.raises(postgres.PostgresError, match='(?s)server log tail:.*"max_connections"'):
        postgres.start(timeout=15)
    assert len(made) == 1
    assert not postgres.Path(made[0]).exists()


def test_the_server_of_a_killed_test_process_is_stopped_and_removed_by_the_next_start():
    """SIGKILL skips atexit and pg_ctl daemonises the postmaster: without the reaping it would stay for good."""
    code = ("import os, signal; from tests import postgres; s = postgres.start()\n"
            "print(s.root, (s.data_dir / 'postmaster.pid').read_text().split()[0], flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=postgres.Path(__file__).parents[2],
                            capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == -9, result.stderr[-2000:]
    root, pid = postgres.Path(result.stdout.split()[0]), int(result.stdout.split()[1])
    try:
        assert root.exists() and support.alive(pid)  # left behind, still running
        with postgres.running() as srv:  # the next start reaps it; its own root is not touched
            assert srv.root.exists() and (srv.root / postgres.OWNER_FILE).read_text() == str(postgres.os.getpid())
        assert not root.exists()
        assert wait_until(lambda: not support.alive(pid), timeout=10, what="the orphaned postmaster to exit")
    finally:
        if root.exists():
            postgres.reap_orphans(postgres.find_bindir(), postgres.os.geteuid() == 0)


def test_a_root_without_an_owner_is_reaped_only_when_old(tmp_path, monkeypatch):
    monkeypatch.setattr(postgres.tempfile, "gettempdir", lambda: str(tmp_path))
    fresh, old, alive = (tmp_path / f"{postgres.ROOT_PREFIX}{name}" for name in ("fresh", "old", "alive"))
    for root in (fresh, old, alive):
        root.mkdir()
    (alive / postgres.OWNER_FILE).write_text(str(postgres.os.getpid()))
    postgres.os.utime(old, (0, 0))
    postgres.os.utime(alive, (0, 0))  # an owner that lives keeps its root, however old
    assert postgres.reap_orphans(postgres.Path("/nonexistent"), False) == [old]
    assert (fresh.exists(), old.exists(), alive.exists()) == (True, False, True)
