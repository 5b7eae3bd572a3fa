"""Safe reads, writes and deletions inside the sync directory.

Every operation walks the relative path one directory at a time with
``O_NOFOLLOW | O_DIRECTORY`` from a descriptor of the root, so a symlinked
directory anywhere on the way is refused and nothing outside the root is ever
touched, whatever is swapped on disk meanwhile.  A received file is written
to a temp file beside its target, fsynced, given its mode and mtime, and
renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat

from .paths import path_problem
from .state import Signature

TMP_PREFIX = ".owsync-"
TMP_SUFFIX = ".tmp"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(Exception):
    """A path that must not be touched (traversal, symlink, not a regular file)."""


class LocalChanged(Exception):
    """The local file changed since the scan; leave it to the next session."""


def signature(st: os.stat_result) -> Signature:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def is_temp_name(name: str) -> bool:
    return name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX)


class SyncDir:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._dirty: set[str] = set()  # directories whose entries changed

    def _open_root(self) -> int:
        return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _walk(self, path: str, create: bool) -> tuple[int, str, str]:
        """Open the parent directory of ``path``: (fd, final name, parent rel path)."""
        problem = path_problem(path)
        if problem:
            raise UnsafePath(f"{path!r}: {problem}")
        parts = path.split("/")
        fd = self._open_root()
        try:
            for i, part in enumerate(parts[:-1]):
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    self._dirty.add("/".join(parts[:i]))
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UnsafePath(f"{path!r}: {part!r} is not a plain directory") from None
                    raise
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd, parts[-1], "/".join(parts[:-1])

    def lstat(self, path: str) -> os.stat_result | None:
        try:
            fd, name, _ = self._walk(path, create=False)
        except (FileNotFoundError, UnsafePath, NotADirectoryError):
            return None
        try:
            return os.lstat(name, dir_fd=fd)
        except FileNotFoundError:
            return None
        finally:
            os.close(fd)

    def read(self, path: str) -> tuple[bytes, os.stat_result]:
        """Content and stat of a regular file; UnsafePath for anything else."""
        fd, name, _ = self._walk(path, create=False)
        try:
            try:
                ffd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise UnsafePath(f"{path!r} is a symlink") from None
                raise
        finally:
            os.close(fd)
        with open(ffd, "rb") as f:
            st = os.fstat(ffd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePath(f"{path!r} is not a regular file")
            return f.read(), st

    def write(
        self, path: str, data: bytes, mode: int, mtime_ms: int, expect: Signature | None
    ) -> os.stat_result:
        """Atomically put ``data`` at ``path`` with ``mode`` and ``mtime_ms``.

        ``expect`` is the signature the scan saw (None: the path was absent);
        if the file on disk no longer matches it, LocalChanged is raised and
        nothing is replaced.
        """
        fd, name, parent = self._walk(path, create=True)
        try:
            self._check_unchanged(fd, name, path, expect)
            tmp = f"{TMP_PREFIX}{secrets.token_hex(6)}{TMP_SUFFIX}"
            tfd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=fd,
            )
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(tfd, view) :]
                    os.fchmod(tfd, mode & 0o777)
                    ns = mtime_ms * 1_000_000
                    os.utime(tfd, ns=(ns, ns))
                    os.fsync(tfd)
                finally:
                    os.close(tfd)
                self._check_unchanged(fd, name, path, expect)
                os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=fd)
                raise
            self._dirty.add(parent)
            return os.lstat(name, dir_fd=fd)
        finally:
            os.close(fd)

    def delete(self, path: str, expect: Signature | None) -> bool:
        """Remove a regular file if it is still as the scan saw it."""
        try:
            fd, name, parent = self._walk(path, create=False)
        except FileNotFoundError:
            return False
        try:
            self._check_unchanged(fd, name, path, expect)
            try:
                os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                return False
            self._dirty.add(parent)
            return True
        finally:
            os.close(fd)

    def _check_unchanged(self, fd: int, name: str, path: str, expect: Signature | None) -> None:
        try:
            st = os.lstat(name, dir_fd=fd)
        except FileNotFoundError:
            if expect is not None:
                raise LocalChanged(f"{path!r} vanished locally during the session") from None
            return
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{path!r} exists locally and is not a regular file")
        if expect is None or signature(st) != expect:
            raise LocalChanged(f"{path!r} changed locally during the session")

    def sync_dirs(self) -> None:
        """fsync every directory whose entries changed, so renames are durable."""
        dirty, self._dirty = self._dirty, set()
        for rel in sorted(dirty):
            try:
                fd = self._open_root() if not rel else self._walk(rel + "/x", False)[0]
            except (OSError, UnsafePath):
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def remove_stale_temps(self, names: list[str]) -> None:
        """Remove temp files left behind by an interrupted run."""
        for rel in names:
            try:
                fd, name, _ = self._walk(rel, create=False)
            except (OSError, UnsafePath):
                continue
            try:
                if is_temp_name(name):
                    os.unlink(name, dir_fd=fd)
            except OSError:
                pass
            finally:
                os.close(fd)
