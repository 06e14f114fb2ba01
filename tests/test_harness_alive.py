"""support.alive: the one place tests ask whether a process still runs.

A child listed by psutil can exit before its state is read; treating that as
an error made tests/instrument/test_multiprocess.py fail in CI (NoSuchProcess
while waiting for gunicorn to replace a killed worker)."""

import subprocess
import sys

from tests import support


def test_a_running_process_is_alive_and_an_unreaped_one_is_not():
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert support.alive(proc.pid) is True
        proc.stdin.close()  # it exits; not waited for, it stays a zombie
        support.wait_until(lambda: not support.alive(proc.pid), timeout=10, what="zombie")
        assert proc.poll() == 0  # it was a zombie until this reaped it
    finally:
        proc.kill()
        proc.wait()


def test_a_process_that_is_gone_is_not_alive_rather_than_an_error():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert support.alive(proc.pid) is False
