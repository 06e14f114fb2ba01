"""The package's shape, enforced: dependencies flow one way, private internals stay in one module.

Layers, bottom first; a module may import the project only from its own
top-level package or from a lower layer. So nothing below imports the
server or the demo, and the catalog imports nothing of the project.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "exporter"

LAYERS = (
    ("exporter", "exporter.catalog"),  # the package itself holds only __version__
    ("exporter.labels", "exporter.families", "exporter.promql", "exporter.yamlfile", "exporter.logs"),
    ("exporter.instrument", "exporter.collectors"),
    ("exporter.config", "exporter.ingest", "exporter.store"),
    ("exporter.api",),
    ("exporter.server",),
    ("exporter.demo",),
    ("exporter.cli", "exporter.stack"),
)
LAYER = {unit: index for index, units in enumerate(LAYERS) for unit in units}
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """The layered unit a module belongs to: its top-level package under ``exporter``."""
    return ".".join(module.split(".")[:2])


def project_imports(path: Path) -> set[str]:
    """Every ``exporter.*`` module the file imports, at any depth (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "exporter"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "exporter":  # from exporter import demo, __version__
                found |= {f"exporter.{alias.name}" if alias.name != "__version__" else "exporter"
                          for alias in node.names}
            elif node.module.split(".")[0] == "exporter":
                found.add(node.module)
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_belongs_to_a_layer():
    assert {unit(m) for m in MODULES} <= set(LAYER), set(map(unit, MODULES)) - set(LAYER)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_flow_down(module):
    own = unit(module)
    wrong = sorted(target for target in project_imports(MODULES[module])
                   if unit(target) != own and LAYER[unit(target)] >= LAYER[own])
    assert not wrong, f"{module} (layer {LAYER[own]}) imports from its layer or above: {wrong}"


def test_the_catalog_imports_nothing_of_the_project():
    assert project_imports(MODULES["exporter.catalog"]) == set()


def test_the_layering_check_catches_an_upward_import(tmp_path):
    """The rule above is not vacuous: an instrument module importing the server is refused."""
    bad = tmp_path / "exporter" / "instrument" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("def f():\n    from exporter.server.app import create_app\n    from exporter import demo\n")
    targets = project_imports(bad)
    assert targets == {"exporter.server.app", "exporter.demo"}
    assert all(LAYER[unit(t)] > LAYER["exporter.instrument"] for t in targets)


# Private attributes of aiohttp, prometheus_client, opentelemetry and the standard library that the
# hot paths use; only exporter/instrument/_compat.py may name them.
THIRD_PARTY_PRIVATE = re.compile(
    r"(?<!self)(?<!cls)\.(_headers|_state|_method|_handler|_resource_index|_match|_value|_sum|_buckets|_upper_bounds|"
    r"_multiprocess|_TRACER_PROVIDER)\b|\b_count_elements\b|[\"'](_multiprocess|_TRACER_PROVIDER|_value|_sum|"
    r"_buckets|_upper_bounds|_match)[\"']")


def test_third_party_private_attributes_only_in_the_compat_module():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py")) if path.name != "_compat.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if THIRD_PARTY_PRIVATE.search(line)
    ]
    assert offenders == []


def test_the_private_attribute_grep_would_see_an_access():
    assert THIRD_PARTY_PRIVATE.search("headers = request._headers")
    assert THIRD_PARTY_PRIVATE.search('getattr(histogram, "_sum", None)')
    assert not THIRD_PARTY_PRIVATE.search("self._sum = 0")  # own attributes are fine


@pytest.mark.parametrize("folder", ["exporter", "alerts", "dashboards", "mixin"])
def test_no_module_over_the_size_limit(folder):
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / folder).rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
