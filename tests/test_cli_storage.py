"""``clary-exporter`` over bad storage, as an operator meets it: one line and exit 2 at start, JSON 503 and
/readyz 503 while running (then back), exit 0 on SIGINT whatever the disk did, ``purge`` that fails loudly.

Real processes and real faults (tests/storage_faults.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests import storage_faults as faults
from tests import support

pytestmark = pytest.mark.sqlite_only  # about SQLite files themselves: on SQLite whatever CLARY_TEST_STORE says

SECRET_ENV = {"CLARY_HMAC_SECRET": "cli-storage-secret-0123456789", "CLARY_ADMIN_TOKEN": "admin-token-0123456789abcdef"}


def start(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """An exporter that is expected to refuse to start (bounded: it would otherwise serve until killed)."""
    return subprocess.run(
        support.exporter_cmd("--listen-address", f"{support.LOOPBACK}:{support.free_port()}",
                             "--no-collector.gpu", "--no-collector.system", "--data-dir", str(data_dir), *args),
        capture_output=True, text=True, timeout=30, env={**os.environ, **SECRET_ENV},
        stdin=subprocess.DEVNULL, cwd=support.ROOT, check=False)


def assert_one_line_exit_2(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("clary-exporter: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _valid_db(data_dir: Path) -> Path:
    from exporter.store.checks import open_checked
    from exporter.store.database import Database

    db = Database(data_dir / "clary.db")
    open_checked(db)
    db.close()
    return data_dir / "clary.db"


def test_garbage_in_place_of_the_database(tmp_path):
    (tmp_path / "clary.db").write_bytes(faults.GARBAGE)
    assert_one_line_exit_2(start(tmp_path), str(tmp_path / "clary.db"), "not a SQLite database")


def test_a_directory_in_place_of_the_database(tmp_path):
    (tmp_path / "clary.db").mkdir()
    assert_one_line_exit_2(start(tmp_path), f"{tmp_path / 'clary.db'} is a directory")


def test_a_data_dir_that_is_a_file_or_under_one(tmp_path):
    (tmp_path / "file").write_text("x")
    assert_one_line_exit_2(start(tmp_path / "file"), f"data dir {tmp_path / 'file'} is not a directory")
    assert_one_line_exit_2(start(tmp_path / "file" / "sub"), f"{tmp_path / 'file'} is a file, not a directory")


def test_a_read_only_file_system(tmp_path):
    with faults.tmpfs(tmp_path / "mnt") as mnt:
        faults.remount(mnt, "ro")
        assert_one_line_exit_2(start(mnt), f"data dir {mnt} is not writable")


def test_a_read_only_database_file(tmp_path):
    path = _valid_db(tmp_path)
    with faults.immutable(path):
        assert_one_line_exit_2(start(tmp_path), str(path), "read-only")


def test_a_full_disk(tmp_path):
    with faults.tmpfs(tmp_path / "mnt", size="256k") as mnt:
        faults.fill(mnt)
        assert_one_line_exit_2(start(mnt), str(mnt))


def test_purge_of_a_missing_dir_or_database_fails_with_one_line(tmp_path):
    def purge(data_dir: Path) -> subprocess.CompletedProcess:
        return subprocess.run(support.exporter_cmd("purge", "--data-dir", str(data_dir)), capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL, cwd=support.ROOT, check=False)

    assert_one_line_exit_2(purge(tmp_path / "missing"), f"data dir {tmp_path / 'missing'} does not exist")
    assert_one_line_exit_2(purge(tmp_path), f"no database at {tmp_path / 'clary.db'}")
    (tmp_path / "clary.db").write_bytes(faults.GARBAGE)
    assert_one_line_exit_2(purge(tmp_path), "not a SQLite database")
    (tmp_path / "clary.db").unlink()
    _valid_db(tmp_path)
    result = purge(tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("purged records older than 365 days"), result.stderr


@pytest.mark.e2e
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_failing_storage_while_running_is_json_503_then_recovers_and_shutdown_exits_0(tmp_path, sig):
    config = tmp_path / "clary.yml"
    config.write_text('api_keys: {"key-lite-alice": {tier: lite, user: alice}}\n')
    port = support.free_port()
    base = f"http://{support.LOOPBACK}:{port}"
    data = tmp_path / "data"
    files = [data / "clary.db", data / "clary.db-wal"]  # not -shm: see tests/storage_faults.py
    feedback = {"method": "POST", "body": {"type": "bug", "rating": 1}, "headers": {"X-API-Key": "key-lite-alice"}}
    log_path = tmp_path / "log"
    with support.exporter(port, "--config", str(config), "--data-dir", str(data), "--no-collector.gpu",
                          "--log-format", "json", env=SECRET_ENV, log_path=log_path) as proc:
        assert support.http_request(f"{base}/api/v1/feedback", **feedback)[0] == 201
        with faults.immutable(*files):
            status, content_type, body = support.http_request(f"{base}/api/v1/feedback", **feedback)
            assert (status, content_type, json.loads(body)["error"]) == (503, "application/json",
                                                                         "storage_unavailable")
            status, _, body = support.http_request(f"{base}/readyz")
            assert status == 503 and json.loads(body)["reason"].startswith("storage unavailable: I/O error")
            status, _, body = support.http_request(f"{base}/metrics")
            assert status == 200 and b"\nclary_exporter_storage_up 0.0\n" in body
            faults.release_immutable(*files)
            support.wait_until(lambda: support.http_request(f"{base}/readyz")[0] == 200, timeout=30, what="readyz 200 again")
        assert support.http_request(f"{base}/api/v1/feedback", **feedback)[0] == 201
        # Broken again, and the process is stopped: the last flush meets a disk that fails.
        with faults.immutable(*files):
            assert support.http_request(f"{base}/api/v1/feedback", **feedback)[0] == 503
            proc.send_signal(sig)
            assert proc.wait(20) == 0
    text = log_path.read_text()
    assert "Traceback" not in text
    records = [json.loads(line) for line in text.splitlines()]
    messages = [r["msg"] for r in records]
    assert messages.count("storage available again") == 1
    assert messages.count("storage unavailable; the API answers 503 and /readyz is not ready until it works again") == 2
    after = records[messages.index("shutting down"):]
    assert all(r["level"] != "error" and "stack" not in r for r in after), after
