"""Fixtures of the ingestion tests."""

from __future__ import annotations

import pytest

from tests.ingest.helpers import make_api


@pytest.fixture
def ingest_api(tmp_path):
    return make_api(tmp_path)
