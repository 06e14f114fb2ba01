"""Shared fixtures. The end-to-end ones (``demo_stack``: a demo exporter
scraped by a real Prometheus) live in tests/e2e/conftest.py."""

import pytest

from tests import store_backend


def pytest_configure(config):
    """``CLARY_TEST_STORE=postgres``: in-process apps get a PostgreSQL store too (tests/store_backend.py)."""
    store_backend.configured()  # a misspelt backend fails the run, never silently tests SQLite
    store_backend.install()


@pytest.fixture(autouse=True)
def _store_backend(request):
    """Tests marked ``sqlite_only`` (about SQLite files themselves) run on SQLite whatever the switch."""
    if request.node.get_closest_marker("sqlite_only") is None:
        yield
        return
    with store_backend.sqlite_forced():
        yield


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL 15 (tests/postgres.py), one per xdist worker, started only when a test asks for it."""
    from tests import postgres

    yield postgres.server()
    postgres.shutdown()


@pytest.fixture
def database_url(postgres_server) -> str:
    """A fresh empty database owned by ``clary`` for this test; its postgresql:// URL. Dropped afterwards."""
    url = postgres_server.fresh_database()
    yield url
    postgres_server.drop_database(url)
