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

from ..core.state import (
    CorruptDatabase,
    Record,
    dumps_db,
    dumps_journal,
    loads_db_doc,
    replay_journal,
)
from . import faults

log = logging.getLogger("owsync")


class LockBusy(Exception):
    pass


def own_files(db_path: str) -> tuple[str, ...]:
    """Every file owsync writes beside its database."""
    return (db_path, db_path + ".db_tmp", db_path + ".lock", db_path + ".corrupt",
            db_path + ".journal")  # fmt: skip


JOURNAL_MIN = 4096  # journal lines before the database is written whole again


def journal_path(db_path: str) -> str:
    return db_path + ".journal"


def load(db_path: str, set_aside: bool = True, root: str | None = None) -> dict[str, Record]:
    """The records in ``db_path``; empty when missing or corrupt (logged)."""
    return load_gen(db_path, set_aside, root)[0]


def load_gen(
    db_path: str, set_aside: bool = True, root: str | None = None
) -> tuple[dict[str, Record], str | None, int]:
    """The records in ``db_path`` with its journal applied (changes recorded
    since it was last written whole), its generation, and the journal lines.

    With ``root``, a database that says it describes another directory is
    not used either: its records would make every file of this one look new
    and every file of that one look deleted, and the peers would delete them.
    """
    try:
        with open(db_path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}, None, 0
    try:
        records, described, gen = loads_db_doc(data)
        try:
            with open(journal_path(db_path), "rb") as f:
                lines = replay_journal(records, gen, f.read())
        except FileNotFoundError:
            lines = 0
    except CorruptDatabase as exc:
        if not set_aside:
            log.error("database %s is corrupt (%s); ignoring it", db_path, exc)
            return {}, None, 0
        log.error("database %s is corrupt (%s); set aside as %s.corrupt and rebuilt from a scan",
                  db_path, exc, db_path)  # fmt: skip
        with contextlib.suppress(OSError):
            faults.point("database.rename.corrupt")
            os.replace(db_path, db_path + ".corrupt")
        with contextlib.suppress(OSError):
            faults.point("database.journal.unlink.corrupt")
            os.unlink(journal_path(db_path))
        return {}, None, 0
    if root is not None and described is not None and described != root:
        log.warning("database %s describes %s, not %s: starting afresh (no deletions"
                    " are inferred from it)", db_path, described, root)  # fmt: skip
        return {}, None, 0
    return records, gen, lines


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


def save(db_path: str, records: dict[str, Record], root: str | None = None) -> str:
    """Write the database whole (a new generation: an older journal no longer
    applies, and is removed); returns the generation."""
    gen = os.urandom(8).hex()
    write_file(db_path, db_path + ".db_tmp", dumps_db(records, root, gen))
    fsync_dir(os.path.dirname(os.path.abspath(db_path)))
    with contextlib.suppress(FileNotFoundError):
        faults.point("database.journal.unlink")
        os.unlink(journal_path(db_path))
    return gen


def save_changes(
    db_path: str,
    before: dict[str, Record],
    after: dict[str, Record],
    root: str | None,
    gen: str | None,
    lines: int,
    touched: set[str] | None = None,
) -> tuple[str | None, int]:
    """Record what changed from ``before`` (as on disk: generation ``gen`` with
    ``lines`` journal lines) to ``after``: in the journal, or by writing the
    database whole when it has no generation yet, a record went away, or the
    journal would outgrow half the records.  ``touched``: the only paths that
    may differ (None: any).  Returns the new (gen, lines)."""
    if touched is not None:
        changed = [r for p in touched if (r := after.get(p)) is not None and before.get(p) != r]
        gone = any(p not in after for p in touched)
    else:
        changed = [r for p, r in after.items() if before.get(p) != r]
        gone = len(after) - len(changed) < len(before)  # a record went away (cheap test)
        if gone:
            gone = bool(before.keys() - after.keys())
    if not changed and not gone:
        return gen, lines
    if gen is None or gone or lines + len(changed) > max(JOURNAL_MIN, len(after) // 2):
        return save(db_path, after, root), 0
    append(db_path, gen, changed)
    return gen, lines + len(changed)


def append(db_path: str, gen: str, records: list[Record]) -> None:
    """Record changed records durably without writing the database whole: one
    line each in its journal, for the generation ``gen`` it extends."""
    if not records:
        return
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    faults.point("database.journal.create")
    fd = os.open(journal_path(db_path), flags, 0o600)
    try:
        view = memoryview(dumps_journal(gen, records))
        while view:
            faults.point("database.journal.write")
            view = view[os.write(fd, view) :]
        faults.point("database.journal.fsync")
        os.fdatasync(fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):  # its time says when it last changed (ha-cluster)
        faults.point("database.utime")
        os.utime(db_path)


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
