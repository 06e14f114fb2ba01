"""Real storage faults for the tests of ``exporter.store.health`` and ``checks``, and how to make them.

Each fault is the real thing, not a mock of SQLite:

- corrupt: garbage written over the file, or over one page of a valid one;
- a directory where the database file belongs; a data dir that is a
  regular file, or sits under one;
- read-only at start: a tmpfs remounted read-only (``mount -o
  remount,ro``). Root ignores file modes, so ``chmod`` proves nothing;
- read-only while running: ``chattr +i`` on the open database and its WAL
  (Linux refuses a remount while files are open for writing; an immutable
  file fails every write through the open descriptors, as a read-only
  remount by the kernel does). Never on the ``-shm`` file: SQLite maps it,
  and a write to an immutable mapping kills the process with SIGBUS;
- disk full: a tmpfs of a few hundred KiB, filled up;
- locked: another connection holding an exclusive transaction;
- deleted or replaced: the file unlinked, or another file renamed over it.

``mount`` needs root with CAP_SYS_ADMIN and ``chattr`` a file system with
inode flags (ext4, xfs). ``make test`` and CI run as root; where a
capability is missing the test fails, saying why: a skipped fault would be
a fault never exercised.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from tests import support

GARBAGE = b"this is not a database, whatever its name says\n" * 200


def _unavailable(reason: str) -> NoReturn:
    support.cannot_run_here(reason, "the storage-fault tests run as root (CI does)")


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (created) for the block; :func:`_unavailable` where not allowed."""
    if shutil.which("mount") is None:
        _unavailable("no mount(8) here")
    path.mkdir(parents=True, exist_ok=True)
    result = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    if result.returncode != 0:
        _unavailable(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {result.stderr.strip()}")
    try:
        yield path
    finally:
        _run("umount", "-l", str(path))


def remount(path: Path, mode: str) -> None:
    """``mode`` "ro" or "rw"; the mount must have no file open for writing to become read-only."""
    result = _run("mount", "-o", f"remount,{mode}", str(path))
    assert result.returncode == 0, result.stderr


def fill(directory: Path) -> Path:
    """Write zeros into ``directory/filler`` until the file system is full; the filler (delete it to free)."""
    filler = directory / "filler"
    chunk = b"\0" * 4096
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


@contextlib.contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """``chattr +i`` on ``paths`` for the block (writes through open descriptors fail too); see :func:`_unavailable`."""
    if shutil.which("chattr") is None:
        _unavailable("no chattr(1) here")
    existing = [str(p) for p in paths if p.exists()]
    result = _run("chattr", "+i", *existing)
    if result.returncode != 0:
        _unavailable(f"cannot make files immutable here (needs root and ext4/xfs): {result.stderr.strip()}")
    try:
        yield
    finally:
        assert _run("chattr", "-i", *existing).returncode == 0


def release_immutable(*paths: Path) -> None:
    """``chattr -i`` now (inside an :func:`immutable` block: the disk is fixed)."""
    assert _run("chattr", "-i", *[str(p) for p in paths if p.exists()]).returncode == 0


def corrupt_page(path: Path) -> None:
    """Overwrite the second page of a valid database: it opens, ``PRAGMA quick_check`` finds it."""
    with open(path, "r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * 4096)
