"""``python -m exporter.stack``: the bundle without docker, for real.

The stack runs with the bundle's own configs (15s scrape interval), so the
first scrape can take up to one interval; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
import yaml

from tests import support
from tests.support import ROOT

RULES_DIR = ROOT / "alerts" / "rules"


class StackProcess:
    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter.stack", "--exporter-port", "0", "--prometheus-port", "0",
             "--alertmanager-port", "0", *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 90) -> dict[str, str]:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"stack exited with {self.proc.returncode}:\n{self.output}")
            return next((line for line in self.lines if line.startswith("ready ")), None)

        line = support.wait_until(ready, timeout, what="stack ready line")
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        return fields

    def wait(self, timeout: float) -> int:
        """The exit status, once every line it wrote has been read: the reader
        thread can still be behind when the process itself has exited."""
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        assert not self._reader.is_alive(), "stack output still open after exit (a child kept it?)"
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _state_dir(output: str) -> Path:
    match = re.search(r"state, logs\s+(\S+)", output)
    assert match, output
    return Path(match.group(1))


def _port_closed(url: str) -> bool:
    try:
        support.http_get(url, timeout=1)
    except OSError:
        return True
    return False


def _gone(pids: list[int]) -> bool:
    return not any(support.alive(pid) for pid in pids)


@pytest.fixture
def stack():
    started = []

    def start(*args):
        s = StackProcess(*args)
        started.append(s)
        return s

    yield start
    for s in started:
        children = []
        try:
            children = psutil.Process(s.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        s.kill()
        for child in children:  # only if the test failed half-way
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass


def test_stack_comes_up_with_the_bundle_and_sigterm_removes_everything(stack):
    s = stack()
    ready = s.wait_ready()
    pids = [int(p) for p in ready["pids"].split(",")]
    prom = support.Prometheus(ready["prometheus"], Path("."))
    assert len(pids) == 3
    children = {c.pid for c in psutil.Process(s.proc.pid).children(recursive=True)}
    assert set(pids) <= children
    # The printed URLs.
    assert f"{ready['exporter']}/metrics" in s.output and ready["alertmanager"] in s.output
    state = _state_dir(s.output)
    assert state.is_dir()

    # Prometheus runs the bundle's config: the clary-exporter target is up ...
    up = support.wait_until(lambda: prom.query('up{job="clary-exporter"} == 1'), timeout=45,
                            what="clary-exporter target up (15s scrape interval)")
    assert up[0]["metric"]["instance"] == ready["exporter"].removeprefix("http://")
    targets = prom.api("targets")["activeTargets"]
    assert {t["labels"]["job"] for t in targets} == {"clary-exporter", "prometheus", "alertmanager"}
    # ... the rules from alerts/rules are loaded, every group of every file ...
    expected_groups = {g["name"] for p in RULES_DIR.glob("*.yml") for g in yaml.safe_load(p.read_text())["groups"]}
    loaded = prom.api("rules")["groups"]
    assert {g["name"] for g in loaded} == expected_groups
    assert all(Path(g["file"]).parent.name == "rules" for g in loaded)
    assert sum(len(g["rules"]) for g in loaded) == sum(
        len(g["rules"]) for p in RULES_DIR.glob("*.yml") for g in yaml.safe_load(p.read_text())["groups"])
    # ... and Alertmanager is ready and known to Prometheus.
    status, body = support.http_get(f"{ready['alertmanager']}/-/ready")
    assert status == 200
    status, body = support.http_get(f"{ready['alertmanager']}/api/v2/status")
    am_config = json.loads(body)["config"]["original"]
    assert "clary-oncall-pager" in am_config  # the bundle's alertmanager.yml
    active_am = support.wait_until(lambda: prom.api("alertmanagers")["activeAlertmanagers"], timeout=20,
                                   what="alertmanager discovered")
    assert active_am[0]["url"].startswith(ready["alertmanager"])

    s.proc.send_signal(signal.SIGTERM)
    assert s.wait(30) == 0, s.output
    assert s.lines[-1] == "stopped"
    assert _gone(pids), [p for p in pids if support.alive(p)]
    for url in (ready["exporter"], ready["prometheus"], ready["alertmanager"]):
        assert _port_closed(url), url
    assert not state.exists()


def test_ctrl_c_during_start_up_stops_what_was_started(stack):
    s = stack()
    # SIGINT as a terminal's Ctrl-C delivers it, once the first child exists.
    support.wait_until(lambda: psutil.Process(s.proc.pid).children(), timeout=30, what="first child")
    children = [c.pid for c in psutil.Process(s.proc.pid).children(recursive=True)]
    s.proc.send_signal(signal.SIGINT)
    assert s.wait(30) == 0, s.output
    assert "stopped" in s.lines
    assert children and _gone(children)
    assert not any(line.startswith("ready ") for line in s.lines)


def test_a_dying_component_stops_the_stack(stack):
    s = stack()
    ready = s.wait_ready()
    pids = [int(p) for p in ready["pids"].split(",")]
    exporter_pid = pids[0]
    os.kill(exporter_pid, signal.SIGKILL)
    assert s.wait(30) == 1, s.output
    assert "exporter exited with -9" in s.output
    assert _gone(pids)


def test_missing_binary_is_a_one_line_error(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "exporter.stack", "--exporter-port", "0",
                             "--prometheus-port", "0", "--alertmanager-port", "0"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "error: none of alertmanager, prometheus-alertmanager on PATH" in result.stderr
