"""Shared fixtures. The end-to-end ones (``demo_stack``: a demo exporter
scraped by a real Prometheus) live in tests/e2e/conftest.py."""

import pytest


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
