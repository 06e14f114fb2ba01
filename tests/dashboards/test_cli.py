"""``clary-dashboards --version``: the installed command and the module both print the bundle's version."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dashboards import cli
from exporter import __version__

EXPECTED = f"clary-dashboards {__version__}"


def test_version_flag_prints_the_bundle_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == EXPECTED


def test_version_needs_no_subcommand_and_subcommands_still_required(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
    assert "required" in capsys.readouterr().err


def test_console_script_prints_the_version():
    script = Path(sys.executable).with_name("clary-dashboards")
    command = str(script) if script.exists() else shutil.which("clary-dashboards")
    assert command, "clary-dashboards is not installed next to this Python; run `make test`"
    proc = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == EXPECTED
