"""The persistent database file and the lock that makes one writer at a time.

Format: owsync 1.2.0's JSON (see :mod:`owsync.state`).  Saves are atomic and
durable: temp file, fsync, rename, fsync of the directory.  A corrupt file is
reported, set aside as ``<db>.corrupt`` and rebuilt from a scan.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time

from ..core.state import CorruptDatabase, Record, dumps_db, loads_db_root
from . import faults

log = logging.getLogger("owsync")


class LockBusy(Exception):
    pass


def own_files(db_path: str) -> tuple[str, ...]:
    """Every file owsync writes beside its database."""
    return (db_path, db_path + ".db_tmp", db_path + ".lock", db_path + ".corrupt")


def load(db_path: str, set_aside: bool = True, root: str | None = None) -> dict[str, Record]:
    """The records in ``db_path``; empty when missing or corrupt (logged).

    With ``root``, a database that says it describes another directory is
    not used either: its records would make every file of this one look new
    and every file of that one look deleted, and the peers would delete them.
    """
    try:
        with open(db_path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}
    try:
        records, described = loads_db_root(data)
    except CorruptDatabase as exc:
        if not set_aside:
            log.error("database %s is corrupt (%s); ignoring it", db_path, exc)
            return {}
        log.error("database %s is corrupt (%s); set aside as %s.corrupt and rebuilt from a scan",
                  db_path, exc, db_path)  # fmt: skip
        with contextlib.suppress(OSError):
            faults.point("database.rename.corrupt")
            os.replace(db_path, db_path + ".corrupt")
        return {}
    if root is not None and described is not None and described != root:
        log.warning("database %s describes %s, not %s: starting afresh (no deletions"
                    " are inferred from it)", db_path, described, root)  # fmt: skip
        return {}
    return records


def write_file(
    path: str,
    tmp: str,
    data: bytes,
    fsync: bool = True,
    exclusive: bool = False,
    points: str = "database.{}",
):
    """Write ``data`` to ``tmp`` (fsynced unless told not to), then rename it to
    ``path``; on any failure the temp file is removed and ``path`` untouched.
    ``exclusive``: ``tmp`` is a fresh name that must not exist yet.  ``points``
    names the calls for the tests' crash points (:mod:`.faults`), ``{}`` the
    operation."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_EXCL if exclusive else os.O_TRUNC
    faults.point(points.format("create"))
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                faults.point(points.format("write"))
                view = view[os.write(fd, view) :]
            if fsync:
                faults.point(points.format("fsync"))
                os.fsync(fd)
        finally:
            os.close(fd)
        faults.point(points.format("rename"))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fsync_dir(path: str, point: str = "database.fsync_dir") -> None:
    """Make a directory's entries durable (a missing directory has none)."""
    with contextlib.suppress(FileNotFoundError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            faults.point(point)
            os.fsync(fd)
        finally:
            os.close(fd)


def save(db_path: str, records: dict[str, Record], root: str | None = None) -> None:
    write_file(db_path, db_path + ".db_tmp", dumps_db(records, root))
    fsync_dir(os.path.dirname(os.path.abspath(db_path)))


class DirLock:
    """An exclusive flock on ``<db>.lock``, held while a session mutates state.

    flock locks belong to an open file description, so two sessions in one
    process exclude each other just as two processes do.
    """

    def __init__(self, db_path: str) -> None:
        self.path = db_path + ".lock"
        self._fd: int | None = None

    def acquire(self, timeout: float) -> None:
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, mode=0o755, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                os.close(fd)
                raise LockBusy(f"another session holds {self.path}")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
