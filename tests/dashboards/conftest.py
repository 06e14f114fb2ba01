"""The dashboards as rendered (what Grafana provisions), once per test module; nothing is written to the repository."""

from __future__ import annotations

import json

import pytest

from dashboards import build as dbuild


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return dbuild.generate()


@pytest.fixture(scope="module")
def dashboards(rendered) -> dict[str, dict]:
    """uid -> parsed dashboard JSON."""
    out = {}
    for text in rendered.values():
        data = json.loads(text)
        out[data["uid"]] = data
    return out
