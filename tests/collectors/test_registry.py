"""Collectors are registered by name; the config fields and CLI flags follow the registry."""

from __future__ import annotations

import pytest

from exporter.cli import build_parser
from exporter.collectors.registry import register, registered
from exporter.config import Collectors, Config


def test_every_collector_module_is_registered_under_its_name():
    found = registered()
    assert sorted(found) == ["gpu", "system"]
    assert {name: entry.factory.name for name, entry in found.items()} == {"gpu": "gpu", "system": "system"}


def test_config_fields_are_the_registered_collectors_with_their_defaults():
    assert set(Collectors.model_fields) == set(registered())
    assert Config().collectors.model_dump() == {name: e.default_enabled for name, e in registered().items()}
    with pytest.raises(ValueError, match="nvme"):
        Config(collectors={"nvme": True})


def test_cli_has_an_on_and_off_flag_per_collector():
    parser = build_parser()
    for name in registered():
        assert parser.parse_args([f"--no-collector.{name}"]).__dict__[f"collector_{name}"] is False
        assert parser.parse_args([f"--collector.{name}"]).__dict__[f"collector_{name}"] is True


def test_a_name_registered_twice_or_mismatched_is_refused():
    class Other:
        name = "system"

    with pytest.raises(ValueError, match="registered twice"):
        register("system", help="x")(Other)

    class Mismatch:
        name = "disk"

    with pytest.raises(ValueError, match="registered as"):
        register("filesystem", help="x")(Mismatch)
    with pytest.raises(ValueError, match="identifier"):
        register("not-an-identifier", help="x")
    assert sorted(registered()) == ["gpu", "system"]
