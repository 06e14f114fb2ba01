"""Every command-line entry point answers --version with the bundle's version, and --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exporter import __version__

BIN = Path(sys.executable).parent
COMMANDS = {
    "clary-exporter": [str(BIN / "clary-exporter")],
    "clary-dashboards": [str(BIN / "clary-dashboards")],
    "clary-alerts": [sys.executable, "-m", "alerts.generate"],
    "clary-stack": [sys.executable, "-m", "exporter.stack"],
    "clary-healthcheck": [sys.executable, "-m", "exporter.server.healthcheck"],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_version_and_help(name):
    command = COMMANDS[name]
    version = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60)
    assert (version.returncode, version.stdout.strip()) == (0, f"{name} {__version__}")
    helped = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "--version" in helped.stdout
