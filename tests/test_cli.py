"""The command line: help, one-line errors with exit code 2, env vars, shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from exporter.catalog import CATALOG
from exporter.config import DEFAULT_PORT, ConfigError, load
from tests import support


def run_cli(*args: str, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(support.exporter_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, cwd=support.ROOT)


def test_help_explains_every_option():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("--listen-address", "--demo", "--config", "--log-level", "--log-format",
                   "--no-collector.gpu", "--list-metrics", "CLARY_LISTEN_ADDRESS", str(DEFAULT_PORT)):
        assert option in result.stdout, option


def test_list_metrics_prints_the_catalog():
    result = run_cli("--list-metrics")
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0
    assert lines[0].split()[:3] == ["NAME", "TYPE", "LABELS"]
    assert [line.split()[0] for line in lines[1:]] == [s.name for s in CATALOG]


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--bogus"], {}, "unrecognized arguments: --bogus"),
        (["--log-level", "loud"], {}, "invalid choice: 'loud'"),
        (["--listen-address", "nowhere"], {}, "listen_address"),
        ([], {"CLARY_LOG_FORMAT": "xml"}, "log_format"),
        ([], {"CLARY_DEMO": "perhaps"}, "CLARY_DEMO"),
        (["--config", "/nonexistent/clary.yml"], {}, "/nonexistent/clary.yml"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, env, message):
    result = run_cli(*args, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_file_value_names_the_field(tmp_path):
    path = tmp_path / "clary.yml"
    path.write_text("collectors:\n  gpu: maybe\n")
    result = run_cli("--config", str(path))
    assert result.returncode == 2
    assert f"config file {path}: collectors.gpu:" in result.stderr


def test_port_in_use_is_a_clear_error():
    import socket

    with socket.socket() as busy:
        busy.bind((support.LOOPBACK, 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("--listen-address", f"{support.LOOPBACK}:{port}", "--demo")
    assert result.returncode == 2
    assert f"cannot listen on {support.LOOPBACK}:{port}" in result.stderr


def test_precedence_flag_over_env_over_file(tmp_path):
    path = tmp_path / "clary.yml"
    path.write_text("log_level: error\nlisten_address: 127.0.0.1:1111\nlog_format: json\n")
    env = {"CLARY_CONFIG": str(path), "CLARY_LISTEN_ADDRESS": "127.0.0.1:2222"}
    config = load({"log_level": "debug"}, environ=env)
    assert config.log_level == "debug"                 # flag wins
    assert config.listen_address == "127.0.0.1:2222"   # env beats file
    assert config.log_format == "json"                 # file beats default
    assert load({}, environ={}).listen_address == f"0.0.0.0:{DEFAULT_PORT}"


def test_unknown_config_key_rejected(tmp_path):
    path = tmp_path / "clary.yml"
    path.write_text("listen_adress: 127.0.0.1:1\n")
    with pytest.raises(ConfigError, match="listen_adress"):
        load({"config": str(path)}, environ={})


def test_allow_lists_only_for_configurable_labels(tmp_path):
    path = tmp_path / "clary.yml"
    path.write_text("allow_lists:\n  tier: [gold]\n")
    with pytest.raises(ConfigError, match="unknown label 'tier'"):
        load({"config": str(path)}, environ={})


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown_on_signal(sig, tmp_path):
    port = support.free_port()
    cmd = support.exporter_cmd("--listen-address", f"{support.LOOPBACK}:{port}", "--demo", "--log-format", "json")
    log_path = tmp_path / "log"
    with support.running(cmd, f"http://{support.LOOPBACK}:{port}/readyz", log_path=log_path) as proc:
        status, _ = support.http_get(f"http://{support.LOOPBACK}:{port}/metrics")
        assert status == 200
        proc.send_signal(sig)
        assert proc.wait(15) == 0
    import json

    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    # The demo's in-flight requests may still log (at info) while the server drains.
    assert [r["msg"] for r in records if r["msg"] != "deliberate error (expected)"][-1] == "shutting down"
    unexpected = [r for r in records if r["level"] == "error"]  # the demo's deliberate errors are info
    assert unexpected == []
    with pytest.raises(OSError):
        import socket

        socket.create_connection((support.LOOPBACK, port), timeout=1).close()


def test_json_logs_are_json_lines(tmp_path):
    import json

    port = support.free_port()
    log_path = tmp_path / "log"

    def records() -> list[dict]:  # whole lines only: the last one may be half written
        return [json.loads(line) for line in log_path.read_text().splitlines(keepends=True)
                if line.startswith("{") and line.endswith("\n")]

    def boom_logged() -> bool:  # the record itself: the start-up line also quotes its message
        return any(r["msg"] == "deliberate error (expected)" for r in records())

    with support.exporter(port, "--demo", "--log-format", "json", log_path=log_path):
        support.wait_until(boom_logged, timeout=20, what="boom log")
    logged = records()
    assert logged and all({"ts", "level", "logger", "msg"} <= set(r) for r in logged)
    boom = next(r for r in logged if r["msg"] == "deliberate error (expected)")
    assert boom["route"] == "/demo/api/v1/boom" and boom["error_type"] == "RuntimeError"
    assert (boom["logger"], boom["level"], boom["deliberate"]) == ("exporter.demo", "info", True)
    assert not any(f"demo-{tier}-" in json.dumps(boom) for tier in ("lite", "standard", "professional"))
    assert "stack" not in boom  # deliberate: one line, no traceback


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "exporter.cli", "--version"], capture_output=True, text=True,
                            timeout=30, cwd=support.ROOT)
    assert result.returncode == 0 and result.stdout.startswith("clary-exporter ")


def _threads_when_ready(data_dir, env: dict | None = None) -> int:
    port = support.free_port()
    env = {"CLARY_HMAC_SECRET": "thread-test-secret-0123456789", **(env or {})}
    with support.exporter(port, "--data-dir", str(data_dir), env=env) as proc:
        return len(os.listdir(f"/proc/{proc.pid}/task"))


@pytest.mark.skipif((os.cpu_count() or 1) < 2 or not os.path.isdir("/proc/self/task"),
                    reason="needs /proc and 2+ CPUs to tell one OpenBLAS thread from one per core")
@pytest.mark.sqlite_only  # counts threads: PostgreSQL's store pool starts its threads on demand
def test_no_openblas_thread_per_core_unless_asked(monkeypatch, tmp_path):
    """numpy (under datasketches) starts an OpenBLAS thread per core; the exporter caps it at one, and
    an OPENBLAS_NUM_THREADS already set still wins (one more thread with 2 than with the default)."""
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    default = _threads_when_ready(tmp_path / "a")
    assert _threads_when_ready(tmp_path / "b", {"OPENBLAS_NUM_THREADS": "2"}) == default + 1
