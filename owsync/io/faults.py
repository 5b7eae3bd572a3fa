"""Crash points: the tests' hook before each file-system call of the write path.

Every call a node makes to put a received file in place, remove one, keep a
version or save its database (each create, write, fsync, syncfs, rename and
unlink) is preceded by ``point(name)``, named ``module.operation[.detail]``
(``syncdir.rename.exchange``, ``database.fsync``, ``versions.write.index``).
Unless a test armed it, a point is one check of a global and nothing else.
``CRASH_POINTS`` in tests/conftest.py lists every point with the runs that
reach it; the crash tests check their runs against it, and under strace that
no call of the write path goes without its point.

The tests arm it through the environment of the process they start:

- ``OWSYNC_CRASH_TRACE=FILE`` appends the name of every point hit to FILE,
  one a line, so that a test enumerates the points from a real run;
- ``OWSYNC_CRASH_AT=NAME:N`` kills this process with SIGKILL just before
  the N-th call at point NAME (a crash there: nothing after it happens);
- ``OWSYNC_STOP_AT=NAME:N`` stops it there with SIGSTOP instead, so that a
  test can act at that very moment (a local write racing a rename) and then
  let it go on with SIGCONT;
- ``OWSYNC_WITHOUT=syncfs,renameat2`` makes this process behave as on a
  system without those calls (an older libc, a file system that refuses
  the flags), so that the tests reach the fallbacks' points too.
"""

from __future__ import annotations

import os
import signal
import threading


def _target(var: str) -> tuple[str, int] | None:
    spec = os.environ.get(var)
    if not spec:
        return None
    name, _, n = spec.rpartition(":")
    return name, int(n)


_TRACE = os.environ.get("OWSYNC_CRASH_TRACE") or None
_KILL = _target("OWSYNC_CRASH_AT")
_STOP = _target("OWSYNC_STOP_AT")
_ARMED = bool(_TRACE or _KILL or _STOP)
_WITHOUT = frozenset(filter(None, os.environ.get("OWSYNC_WITHOUT", "").split(",")))
_counts: dict[str, int] = {}
_lock = threading.Lock()


def point(name: str) -> None:
    """About to make the file-system call ``name`` (see the module's doc)."""
    if _ARMED:
        _hit(name)


def missing(call: str) -> bool:
    """Whether a test asked this process to do without ``call`` (see the module's doc)."""
    return call in _WITHOUT


def _hit(name: str) -> None:
    with _lock:
        n = _counts[name] = _counts.get(name, 0) + 1
        if _TRACE:
            fd = os.open(_TRACE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, f"{name}\n".encode())
            finally:
                os.close(fd)
        if (name, n) == _KILL:
            os.kill(os.getpid(), signal.SIGKILL)
        if (name, n) == _STOP:
            os.kill(os.getpid(), signal.SIGSTOP)
