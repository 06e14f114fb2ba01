"""Fixtures of the aiohttp integration tests; those that build an app run once per integration."""

from __future__ import annotations

import pytest

from tests.instrument.aiohttp_middleware.service import INTEGRATIONS, Handlers, build_app


@pytest.fixture
def handlers():
    return Handlers()


@pytest.fixture(params=INTEGRATIONS)
def integration(request):
    return request.param


@pytest.fixture
async def client(aiohttp_client, rec, handlers, integration):
    return await aiohttp_client(build_app(rec, handlers, integration))
