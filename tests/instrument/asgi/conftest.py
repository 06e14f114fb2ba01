"""Fixtures of the ASGI middleware tests."""

from __future__ import annotations

import pytest

from tests.instrument.asgi.service import Handlers, build_app


@pytest.fixture
def handlers():
    return Handlers()


@pytest.fixture
def app(rec, handlers):
    return build_app(rec, handlers)
