"""Change detection: recursive inotify on Linux, polling elsewhere.

The watcher only says "something may have changed"; the daemon then rescans
(cheap: unchanged files are not hashed) and compares with its database, so
owsync's own writes, already recorded, never echo back as local changes.

Only the directories that can hold a path the group's patterns match are
watched (:meth:`owsync.core.filters.Filter.may_hold`): a group syncing
/etc/passwd and /etc/shadow watches /etc alone, not every directory below it.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Callable

from ..core.filters import Filter

log = logging.getLogger("owsync")

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ISDIR = 0x40000000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
WATCH_MASK = (
    IN_CLOSE_WRITE | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
    | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW
)  # fmt: skip
_EVENT = struct.Struct("iIII")

DEBOUNCE = 0.1  # quiet time that ends a burst of events
MAX_DELAY = 0.5  # a steady stream of events still reports this often
POLL_FALLBACK = 2.0  # rescan period when inotify cannot be used
IDLE_WAKE = 5.0  # with no events, how often the watcher looks whether to stop


class InotifyUnavailable(Exception):
    pass


class Inotify:
    """A recursive inotify watch on a directory tree (hidden directories
    skipped), on the directories ``scope`` says can hold a synced path."""

    def __init__(
        self, root: str, scope: Filter | None = None, ignore: Callable[[str], bool] | None = None
    ) -> None:
        """``ignore``: the relative paths (files, and directories as 'a/b/')
        whose news is not wanted, nor their directories watched: owsync's own
        state inside the tree."""
        self.root = root
        self._ignore = ignore
        # which directories to watch ('a/b/', relative): all, or where scope can match
        self._descend = scope.may_hold if scope is not None and not scope.whole_tree else None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            self._add = libc.inotify_add_watch
            init = libc.inotify_init1
        except (OSError, AttributeError) as exc:
            raise InotifyUnavailable(f"no inotify: {exc}") from None
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise InotifyUnavailable(f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        self._paths: dict[int, str] = {}
        self.add_tree(root)

    def close(self) -> None:
        os.close(self.fd)

    def add(self, path: str) -> None:
        wd = self._add(self.fd, os.fsencode(path), WATCH_MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err == errno.ENOSPC:
                raise InotifyUnavailable("the inotify watch limit is reached")
            if err in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return  # gone already, or a symlink: nothing to watch
            raise InotifyUnavailable(f"inotify_add_watch {path}: {os.strerror(err)}")
        self._paths[wd] = path

    @property
    def watches(self) -> int:
        """How many directories are watched."""
        return len(self._paths)

    def wanted(self, path: str) -> bool:
        """Whether directory ``path`` (absolute, under the root) is to be watched."""
        if self._descend is None and self._ignore is None:
            return True
        rel = os.path.relpath(path, self.root)
        if rel == ".":
            return True
        rel = rel.replace(os.sep, "/") + "/"
        if self._ignore is not None and self._ignore(rel):
            return False
        return self._descend is None or self._descend(rel)

    def add_tree(self, root: str) -> None:
        if not self.wanted(root):
            return
        self.add(root)
        narrow = self._descend is not None
        for dirpath, dirnames, _ in os.walk(root):
            dirnames[:] = [
                d
                for d in dirnames
                if not d.startswith(".") and (not narrow or self.wanted(os.path.join(dirpath, d)))
            ]
            for d in dirnames:
                self.add(os.path.join(dirpath, d))

    def read(self, paths: set[str] | None) -> tuple[bool, set[str] | None]:
        """Consume pending events; whether any may mean a change of the tree,
        and the paths (relative to the root) they name, added to ``paths``
        (None: unknown, after a queue overflow: rescan everything)."""
        changed = False
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return changed, paths
            off = 0
            while off < len(buf):
                wd, mask, _, length = _EVENT.unpack_from(buf, off)
                name = buf[off + _EVENT.size : off + _EVENT.size + length].rstrip(b"\0")
                off += _EVENT.size + length
                if mask & IN_IGNORED:
                    self._paths.pop(wd, None)
                    continue
                name_s = os.fsdecode(name)
                if name_s.startswith(".owsync-"):
                    continue  # our own temp files
                if self._ignore is not None and wd in self._paths:
                    rel = os.path.relpath(os.path.join(self._paths[wd], name_s), self.root)
                    if self._ignore(rel.replace(os.sep, "/")):
                        continue  # owsync's state (a database, its journal, a store)
                changed = True
                if mask & IN_Q_OVERFLOW or wd not in self._paths:
                    paths = None
                    continue
                if paths is not None:
                    rel = os.path.relpath(os.path.join(self._paths[wd], name_s), self.root)
                    paths.add("" if rel == "." else rel.replace(os.sep, "/"))
                new_dir = mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO)
                if new_dir and wd in self._paths and not name_s.startswith("."):
                    self.add_tree(os.path.join(self._paths[wd], name_s))


class Watcher(threading.Thread):
    """Calls ``on_change(paths)`` after local changes (debounced), until ``stop``
    is set; ``paths`` are relative to the root, or None when unknown."""

    def __init__(
        self,
        root: str,
        on_change: Callable[[set[str] | None], None],
        stop: threading.Event,
        not_ours: Callable[[set[str]], set[str]] | None = None,
        scope: Filter | None = None,
        ignore: Callable[[str], bool] | None = None,
    ) -> None:
        """``not_ours``: of the paths events named, those that are not this
        node's own writes, exactly as it made them (those need no rescan).
        ``scope``: the group's filter; only the directories that can hold a
        path it takes are watched (None: the whole tree)."""
        super().__init__(name="owsync-watcher", daemon=True)
        self.root = root
        self.scope = scope
        self.ignore = ignore  # owsync's own state in the tree (Inotify's ``ignore``)
        self.inotify: Inotify | None = None  # while it watches (its watch count: status)
        self.on_change = on_change
        self.not_ours = not_ours
        self.stop = stop
        self.mode = "inotify"
        # time.monotonic() once every watch is in place (None: not yet, or
        # polling): what changed before that, only a full scan begun since finds
        self.armed: float | None = None
        self._busy = False  # events read and not yet told (on_change returned)

    def run(self) -> None:
        try:
            scoped = self.scope is not None or self.ignore is not None
            ino = Inotify(self.root, self.scope, self.ignore) if scoped else Inotify(self.root)
        except InotifyUnavailable as exc:
            log.warning("%s; polling %s every %.0f s instead", exc, self.root, POLL_FALLBACK)
            self.mode = "polling"
            self._poll()
            return
        self.inotify = ino
        self.armed = time.monotonic()
        try:
            self._watch(ino)
        except InotifyUnavailable as exc:
            self.armed = None  # a new directory may have gone unwatched
            log.warning("%s; polling %s every %.0f s instead", exc, self.root, POLL_FALLBACK)
            self.mode = "polling"
            self._poll()
        finally:
            self.armed = None
            self.inotify = None
            ino.close()

    def quiet(self) -> bool:
        """Whether every change inotify reported has been told (on_change
        returned) and none waits: then records rescanned by a full scan begun
        after :attr:`armed` hold the tree as it is.  (The event of a write is
        queued when the write returns; a file written and still open is not
        reported until closed: the poll's full scan finds it.)"""
        ino = self.inotify
        if ino is None or self.armed is None or self.stop.is_set():
            return False
        try:  # first the queue, then busy: a read between the two leaves busy set
            waiting = bool(select.select([ino.fd], [], [], 0)[0])
        except (OSError, ValueError):
            return False
        return not waiting and not self._busy

    def _watch(self, ino: Inotify) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select([ino.fd], [], [], IDLE_WAKE)
            if not ready:
                continue
            self._busy = True
            try:
                self._burst(ino)
            except BaseException:
                self.armed = None  # (before busy clears: never quiet with a change untold)
                raise
            finally:
                self._busy = False

    def _burst(self, ino: Inotify) -> None:
        """Read a burst of events (debounced) and tell what changed."""
        changed, paths = ino.read(set())
        if not changed:
            return
        first = last = time.monotonic()
        while not self.stop.is_set():  # debounce the burst
            ready, _, _ = select.select([ino.fd], [], [], DEBOUNCE)
            now = time.monotonic()
            if ready:
                more, paths = ino.read(paths)
                if more:
                    last = now
            if now - last >= DEBOUNCE or now - first >= MAX_DELAY:
                break
        if paths is not None and "" in paths:
            paths = None  # the root itself: everything
        if paths is not None and self.not_ours is not None:
            named, paths = len(paths), self.not_ours(paths)
            if len(paths) < named:
                log.debug("watcher: %d path(s) as this node's links wrote them, not rescanned",
                          named - len(paths))  # fmt: skip
            if not paths:
                return
        self.on_change(paths)

    def _poll(self) -> None:
        while not self.stop.wait(POLL_FALLBACK):
            self.on_change(None)
