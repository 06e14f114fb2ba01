"""Which store the tests' exporters use: SQLite (default) or PostgreSQL (``CLARY_TEST_STORE=postgres``).

With ``postgres``, every exporter a test starts gets a fresh database of the
process's throwaway server (tests/postgres.py): subprocesses through
``--database-url`` (``support.exporter_cmd``), in-process apps through
``Store.for_config`` (patched by tests/conftest.py for configs without a
URL). One database per data directory, so a test that restarts an exporter
on its data dir finds its rows again, and :func:`database` inspects the
same rows whichever engine holds them.

Tests about SQLite files themselves (corrupt file, full disk, chattr) are
marked ``sqlite_only``: they still run, on SQLite (:func:`sqlite_forced`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from exporter.store.database import DB_FILENAME, Database

ENV = "CLARY_TEST_STORE"
BACKENDS = ("sqlite", "postgres")
_urls: dict[str, str] = {}  # resolved data dir -> its database's URL
_lock = threading.Lock()
_state = {"sqlite_only": False, "for_config": None}  # the running test's mark; Store.for_config as shipped


def configured() -> str:
    """The backend ``CLARY_TEST_STORE`` names (``sqlite`` when unset); anything else is a mistake."""
    value = os.environ.get(ENV, "").strip().lower() or "sqlite"
    if value not in BACKENDS:
        raise ValueError(f"{ENV}={value!r}: expected one of {', '.join(BACKENDS)}")
    return value


def postgres() -> bool:
    """Whether exporters started now get PostgreSQL (the switch is on and the test is not ``sqlite_only``)."""
    return configured() == "postgres" and not _state["sqlite_only"]


@contextlib.contextmanager
def sqlite_forced() -> Iterator[None]:
    """Within: SQLite whatever the switch says (tests marked ``sqlite_only``)."""
    previous, _state["sqlite_only"] = _state["sqlite_only"], True
    try:
        yield
    finally:
        _state["sqlite_only"] = previous


def url_for(data_dir: str | Path) -> str:
    """The PostgreSQL database of a data directory: created on first use, the same one afterwards."""
    from tests import postgres as pg

    key = str(Path(data_dir).resolve())
    with _lock:
        url = _urls.get(key)
    if url is None:
        url = pg.fresh_database()
        with _lock:
            url = _urls.setdefault(key, url)
    return url


def known_url(data_dir: str | Path) -> str | None:
    """The database :func:`url_for` gave ``data_dir`` so far; None when none did (or the switch is off)."""
    if not postgres():
        return None
    with _lock:
        return _urls.get(str(Path(data_dir).resolve()))


def database(data_dir: str | Path) -> Database:
    """The store an exporter on ``data_dir`` uses, for a test to inspect: its PostgreSQL database, else the file."""
    if postgres():
        return Database(url=url_for(data_dir))
    return Database(Path(data_dir) / DB_FILENAME)


def store_for(config):
    """``Store.for_config`` under the switch: a config without a URL gets its data dir's database."""
    from exporter.store.database import Store

    if config.database_url or not postgres():
        return _state["for_config"](config)
    return Store(url=url_for(config.data_dir), pool_size=config.database_pool_size)


def install() -> None:
    """Route ``Store.for_config`` through :func:`store_for` (once per process; only when the switch is on)."""
    from exporter.store.database import Store

    if configured() != "postgres" or _state["for_config"] is not None:
        return
    _state["for_config"] = Store.for_config  # bound to Store
    Store.for_config = classmethod(lambda cls, config: store_for(config))


def stored_bytes(data_dir: str | Path) -> bytes:
    """Everything the store holds, for "never stored in clear" checks: the SQLite files' bytes, or every
    row of every table of the PostgreSQL database as text."""
    if not postgres():
        return b"".join((Path(data_dir) / name).read_bytes() for name in (DB_FILENAME, DB_FILENAME + "-wal")
                        if (Path(data_dir) / name).exists())
    import psycopg
    from psycopg import sql

    with psycopg.connect(url_for(data_dir), autocommit=True, connect_timeout=10) as conn:
        tables = [name for (name,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")]
        assert tables, "no tables: the exporter never created its store here"
        return b"\n".join(str(row).encode() for table in tables
                          for row in conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))))


def store(data_dir: str | Path):
    """A ``Store`` on the data dir's database (PostgreSQL under the switch), as ``Store(data_dir)`` is on SQLite."""
    from exporter.store.database import Store

    return Store(url=url_for(data_dir)) if postgres() else Store(data_dir)
