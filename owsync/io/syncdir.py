"""Safe reads, writes and deletions inside the sync directory.

Every operation reaches its file through directory descriptors opened one
component at a time with ``O_NOFOLLOW | O_DIRECTORY`` from a descriptor of
the root, so a symlinked directory anywhere on the way is refused and nothing
outside the root is touched, whatever is swapped on disk meanwhile.  The
descriptors are kept for the life of the SyncDir (one session), so a path's
parents are walked once, not once per file.

A received file is written to a temp file beside its target (``stage``),
then made durable and renamed into place with its mode and mtime
(``commit``); the renames are made durable before the database records them
(``sync_dirs``).  Where Linux's syncfs(2) is there, one call per file system
makes a whole batch durable: one journal commit and one cache flush, where
an fsync per file costs one each (bench/disk_bench.py).  Elsewhere, every
file and directory is fsynced.

A received file never overwrites a local write made since the scan.  The
file is checked just before it goes in place, and where Linux's renameat2(2)
is there, the rename itself closes the moment between that check and the
rename: a new file goes in place with RENAME_NOREPLACE (a local file created
meanwhile stays), a replaced one with RENAME_EXCHANGE, after which what was
swapped out must still be the file the scan saw, or it is swapped back.
Where a file system refuses these flags (jffs2 has no RENAME_EXCHANGE), a
plain rename follows the check, as everywhere without renameat2.  A peer's
deletion likewise takes the file aside with one rename before it checks it
again and removes it: a local write made meanwhile is put back.

A process killed between such a rename and the check after it leaves a file
under a temp name that may be a local write.  So the temp name a replaced
file is exchanged through, and the one a deleted file is taken aside to,
say what they are for (:func:`mark_name`): the target's name, the
signature of the file the scan saw there and, for an exchange, that of the
staged file.  Recovery (:meth:`SyncDir.remove_stale_temps`) then tells the
staged file, the file the scan saw (both removed) and a local write that
raced (put back, unless the target was written again since) apart.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable
from typing import Literal

from ..core.paths import path_problem
from ..core.state import Signature
from . import faults

log = logging.getLogger("owsync")

TMP_PREFIX = ".owsync-"
TMP_SUFFIX = ".tmp"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


# loaded on first use: ctypes is not worth its import for reads; False: none here
_syncfs: Callable[[int], None] | Literal[False] | None = None


def have_syncfs() -> bool:
    global _syncfs
    if _syncfs is None:
        _syncfs = (not faults.missing("syncfs") and _load_syncfs()) or False
    return bool(_syncfs)


def syncfs(fds, point: str) -> None:
    """Make everything written on the file systems of ``fds`` durable: one
    syncfs(2) per file system (a subdirectory may be a mount point of another);
    ``point`` names the call for the tests' crash points (:mod:`.faults`)."""
    seen: dict[int, int] = {}
    for fd in fds:
        seen.setdefault(os.fstat(fd).st_dev, fd)
    assert _syncfs, "syncfs() before have_syncfs() said yes"
    for fd in seen.values():
        faults.point(point)
        _syncfs(fd)


def _load_syncfs():
    try:
        import ctypes  # lazy: loaded once, only where syncfs(2) is looked up

        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int

    def call(fd: int) -> None:
        if fn(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return call


RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
# renameat2's number where libc lacks the function (glibc < 2.28, musl < 1.2.5):
# (machine, pointer size) -> number, only where that pair tells the ABI
_RENAMEAT2_NR = {
    ("x86_64", 8): 316,
    ("aarch64", 8): 276,
    ("riscv64", 8): 276,
    ("aarch64", 4): 382,  # 32-bit ARM userland on a 64-bit kernel
    ("mips", 4): 4351,  # o32, as OpenWrt builds it
    **{(m, 4): 353 for m in ("i386", "i486", "i586", "i686")},
    **{(m, 4): 382 for m in ("armv5tel", "armv6l", "armv7l", "armv8l")},
}
_renameat2: Callable[[int, bytes, bytes, int], int] | Literal[False] | None = None  # as syncfs
_refused: set[int] = set()  # renameat2 flags this system refused (logged once)


def _have_renameat2() -> bool:
    global _renameat2
    if _renameat2 is None:
        _renameat2 = (not faults.missing("renameat2") and _load_renameat2()) or False
    return bool(_renameat2)


def renameat2(dir_fd: int, src: str, dst: str, flags: int) -> None:
    """renameat2(2) within one directory; OSError(ENOSYS) where it is missing."""
    if not _have_renameat2():
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    assert _renameat2
    _renameat2(dir_fd, os.fsencode(src), os.fsencode(dst), flags)


def _load_renameat2():
    try:
        import ctypes  # lazy: loaded once, only where renameat2(2) is looked up

        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    fn = getattr(libc, "renameat2", None)
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        fn.restype = ctypes.c_int

        def raw(fd, src, dst, flags):
            return fn(fd, src, fd, dst, flags)
    else:
        nr = _RENAMEAT2_NR.get((os.uname().machine, ctypes.sizeof(ctypes.c_void_p)))
        if nr is None:
            return None
        syscall = libc.syscall
        syscall.restype = ctypes.c_long

        def raw(fd, src, dst, flags):
            args = (ctypes.c_int(fd), ctypes.c_char_p(src), ctypes.c_int(fd), ctypes.c_char_p(dst))
            return syscall(ctypes.c_long(nr), *args, ctypes.c_uint(flags))

    def call(fd: int, src: bytes, dst: bytes, flags: int) -> None:
        if raw(fd, src, dst, flags) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return call


def _rename_noreplace(dir_fd: int, src: str, dst: str) -> None:
    """Rename within one directory, not over a file there (where renameat2 is)."""
    if RENAME_NOREPLACE not in _refused:
        try:
            renameat2(dir_fd, src, dst, RENAME_NOREPLACE)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
    os.rename(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


class UnsafePath(Exception):
    """A path that must not be touched (traversal, symlink, not a regular file)."""


class LocalChanged(Exception):
    """The local file changed since the scan; leave it to the next session."""


def signature(st: os.stat_result) -> Signature:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def is_temp_name(name: str) -> bool:
    return name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX)


# the signature fields a marked temp name carries: (size, mtime_ns, ino)
Mark = tuple[int, int, int]


def _mark_of(st: os.stat_result) -> Mark:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _sig_mark(sig: Signature) -> Mark:
    return (sig[0], sig[1], sig[3])


def mark_name(kind: str, marks: list[Mark | None], target: str) -> str:
    """The temp name of a file that may be a local write taken out of
    ``target`` (a name in the same directory): ``kind`` "x", exchanged for a
    staged file (marks: the staged file's, then the replaced file's as the
    scan saw it); "d", taken aside to be deleted (marks: the file's as the
    scan saw it, None: any).  The target's name goes in as it is, or as a
    hash where it would make the name too long."""
    fields = "-".join("" if m is None else ".".join(f"{v:x}" for v in m) for m in marks)
    name = f"{TMP_PREFIX}{kind}{fields}-n{target}{TMP_SUFFIX}"
    if len(os.fsencode(name)) > 255:
        name = f"{TMP_PREFIX}{kind}{fields}-h{_name_hash(target)}{TMP_SUFFIX}"
    return name


def _name_hash(name: str) -> str:
    return hashlib.sha256(os.fsencode(name)).hexdigest()[:32]


def parse_mark(name: str) -> tuple[str, list[Mark | None], str] | None:
    """(kind, marks, "n" + target name or "h" + its hash) of a marked temp
    name (:func:`mark_name`); None for a staged file's (or anything else)."""
    body = name[len(TMP_PREFIX) : -len(TMP_SUFFIX)]
    kind, nmarks = body[:1], {"x": 2, "d": 1}.get(body[:1])
    if nmarks is None:
        return None
    parts = body[1:].split("-", nmarks)
    if len(parts) != nmarks + 1 or parts[-1][:1] not in ("n", "h") or len(parts[-1]) < 2:
        return None
    marks: list[Mark | None] = []
    try:
        for field in parts[:-1]:
            values = tuple(int(v, 16) for v in field.split(".")) if field else None
            if values is not None and len(values) != 3:
                return None
            marks.append(values)  # type: ignore[arg-type]
    except ValueError:
        return None
    return kind, marks, parts[-1]


class Staged:
    """A received file written to a temp file, not yet in place."""

    __slots__ = ("path", "dir_fd", "name", "tmp", "fd", "expect", "size")

    def __init__(self, path, dir_fd, name, tmp, fd, expect: Signature | None, size) -> None:
        self.path, self.dir_fd, self.name, self.tmp = path, dir_fd, name, tmp
        self.fd, self.expect, self.size = fd, expect, size


class SyncDir:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        # With syncfs a staged file needs no descriptor of its own to be made
        # durable, so batches may be large; without, each keeps one for fsync.
        self.by_fs = have_syncfs()
        self.batch_files = 1024 if self.by_fs else 64
        self._fds: dict[str, int] = {}  # relative directory -> open descriptor
        # (st_dev, st_ino) of each held directory: fixed for the life of its
        # descriptor, so taken once, not fstat'ed at every check
        self._ids: dict[str, tuple[int, int]] = {}
        self._dirty: set[str] = set()  # directories whose entries changed
        # temp names: a random stem per SyncDir (drawn at its first temp file)
        # and a counter, not a getrandom per file; O_EXCL catches the rare
        # name left by an earlier run
        self._tmp_stem = ""
        self._tmp_seq = itertools.count(1)  # next() is atomic: live links share one

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._ids.clear()

    @property
    def held(self) -> int:
        """How many directory descriptors are open."""
        return len(self._fds)

    def __enter__(self) -> SyncDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- walking ------------------------------------------------------------

    def _dir(self, rel: str, create: bool) -> int:
        """Descriptor of the directory ``rel`` ('' is the root), walked safely."""
        fd = self._fds.get(rel)
        if fd is not None:
            return fd
        if not rel:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        else:
            parent_rel, _, name = rel.rpartition("/")
            parent = self._dir(parent_rel, create)
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    raise
                faults.point("syncdir.mkdir")
                with contextlib.suppress(FileExistsError):  # made meanwhile (another link)
                    os.mkdir(name, 0o755, dir_fd=parent)
                self._dirty.add(parent_rel)
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePath(f"{rel!r} is not a plain directory") from None
                raise
        try:
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fds[rel] = fd
        self._ids[rel] = (st.st_dev, st.st_ino)
        return fd

    def _parent(self, path: str, create: bool) -> tuple[int, str, str]:
        """(descriptor of the parent directory, final name, parent's relative path)."""
        problem = path_problem(path)
        if problem:
            raise UnsafePath(f"{path!r}: {problem}")
        parent, _, name = path.rpartition("/")
        fd = self._dir(parent, create)
        self._check_in_place(parent, path)
        return fd, name, parent

    def _check_in_place(self, rel: str, path: str) -> None:
        """Raise UnsafePath unless each directory of ``rel`` is still where it
        was opened: a descriptor held since follows a directory moved out of
        the root, and nothing may be written or removed through it then."""
        while rel:
            parent_rel, _, name = rel.rpartition("/")
            try:
                st = os.stat(name, dir_fd=self._fds[parent_rel], follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is None or (st.st_dev, st.st_ino) != self._ids[rel]:
                raise UnsafePath(f"{path!r}: {rel!r} was moved or replaced during the session")
            rel = parent_rel

    # --- operations ---------------------------------------------------------

    def read(self, path: str) -> tuple[bytes, os.stat_result]:
        """Content and stat of a regular file; UnsafePath for anything else."""
        f, st = self.open_read(path)
        with f:
            return f.read(), st

    def open_read(self, path: str):
        """(binary file object, stat) of a regular file, for reading it a piece
        at a time; UnsafePath for anything else."""
        dfd, name, _ = self._parent(path, create=False)
        try:
            ffd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(f"{path!r} is a symlink") from None
            raise
        f = open(ffd, "rb", buffering=0)  # noqa: SIM115 - the caller closes it
        st = os.fstat(ffd)
        if not stat.S_ISREG(st.st_mode):
            f.close()
            raise UnsafePath(f"{path!r} is not a regular file")
        return f, st

    def stage(
        self, path: str, data: bytes, mode: int, mtime_ms: int, expect: Signature | None
    ) -> Staged:
        """Write ``data`` to a temp file beside ``path``, with its mode and mtime.

        ``expect`` is the signature the scan saw (None: the path was absent);
        it is checked again when the file is committed.
        """
        staged = self.open_stage(path, expect)
        try:
            self.append(staged, data)
        except BaseException:
            self.discard([staged])
            raise
        self.finish_stage(staged, mode, mtime_ms)
        return staged

    def open_stage(self, path: str, expect: Signature | None) -> Staged:
        """A new, empty temp file beside ``path``, to be filled by :meth:`append`
        and closed by :meth:`finish_stage` (or :meth:`discard`)."""
        dfd, name, parent = self._parent(path, create=True)
        if expect is not None or RENAME_NOREPLACE in _refused:
            # a new file's rename refuses to replace what got there (commit)
            self._check_unchanged(dfd, name, path, expect)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        if not self._tmp_stem:
            self._tmp_stem = f"{TMP_PREFIX}{os.urandom(6).hex()}-"
        while True:
            tmp = f"{self._tmp_stem}{next(self._tmp_seq):x}{TMP_SUFFIX}"
            faults.point("syncdir.create.temp")
            try:
                tfd = os.open(tmp, flags, 0o600, dir_fd=dfd)
                break
            except FileExistsError:
                continue
        self._dirty.add(parent)
        return Staged(path, dfd, name, tmp, tfd, expect, 0)

    def append(self, staged: Staged, data) -> None:
        """Write the next piece of a staged file (an OSError leaves it to discard)."""
        view = memoryview(data)
        staged.size += len(view)
        while view:
            faults.point("syncdir.write.temp")
            view = view[os.write(staged.fd, view) :]

    def finish_stage(self, staged: Staged, mode: int, mtime_ms: int) -> None:
        """Give a staged file its mode and mtime; it then waits for commit()."""
        try:
            faults.point("syncdir.chmod.temp")
            os.fchmod(staged.fd, mode & 0o777)
            ns = mtime_ms * 1_000_000
            faults.point("syncdir.utime.temp")
            os.utime(staged.fd, ns=(ns, ns))
            if self.by_fs:
                os.close(staged.fd)
                staged.fd = -1
        except BaseException:
            self.discard([staged])
            raise

    def commit(self, batch: list[Staged]) -> list[os.stat_result | Exception]:
        """Make every staged file durable, then rename each into place.

        Returns, per file, its stat once in place, or the LocalChanged /
        UnsafePath that kept it out.  An OSError (a full disk, say) discards
        the whole batch and is raised.
        """
        try:
            if self.by_fs:
                syncfs([s.dir_fd for s in batch], "syncdir.syncfs.batch")
            else:
                for s in batch:
                    faults.point("syncdir.fsync.temp")
                    os.fsync(s.fd)
        except BaseException:
            self.discard(batch)
            raise
        out: list[os.stat_result | Exception] = []
        for i, s in enumerate(batch):
            if s.fd >= 0:
                os.close(s.fd)
                s.fd = -1
            try:
                self._check_in_place(s.path.rpartition("/")[0], s.path)
                if s.expect is not None:  # a new file's rename checks itself
                    self._check_unchanged(s.dir_fd, s.name, s.path, s.expect)
                self._put_in_place(s)
                out.append(self._placed(s))
            except (LocalChanged, UnsafePath) as exc:
                self._unlink_tmp(s)
                out.append(exc)
            except BaseException:
                self.discard(batch[i:])
                raise
        return out

    def _placed(self, s: Staged) -> os.stat_result:
        """The stat of a file just put in place; LocalChanged when a local
        rename or deletion took it away at once (the next scan sees that)."""
        try:
            return os.lstat(s.name, dir_fd=s.dir_fd)
        except FileNotFoundError:
            raise LocalChanged(f"{s.path!r} went away locally as it was put in place") from None

    def _put_in_place(self, s: Staged) -> None:
        """Rename a checked staged file into place, unless a local write got
        there since the check (LocalChanged, UnsafePath; the temp file is then
        the caller's to remove)."""
        flag = RENAME_NOREPLACE if s.expect is None else RENAME_EXCHANGE
        if flag in _refused:
            if s.expect is None:  # no RENAME_NOREPLACE: check just before
                self._check_unchanged(s.dir_fd, s.name, s.path, None)
            faults.point("syncdir.rename")
            os.rename(s.tmp, s.name, src_dir_fd=s.dir_fd, dst_dir_fd=s.dir_fd)
            return
        if flag == RENAME_EXCHANGE and _have_renameat2():
            # what the exchange takes out may be a local write: its temp name
            # says so first, and how recovery tells it from the staged file
            assert s.expect is not None
            marked = mark_name("x", [_mark_of(os.lstat(s.tmp, dir_fd=s.dir_fd)),
                                     _sig_mark(s.expect)], s.name)  # fmt: skip
            faults.point("syncdir.rename.mark")
            os.rename(s.tmp, marked, src_dir_fd=s.dir_fd, dst_dir_fd=s.dir_fd)
            s.tmp = marked
        try:
            if flag == RENAME_NOREPLACE:
                faults.point("syncdir.rename.noreplace")
            else:
                faults.point("syncdir.rename.exchange")
            renameat2(s.dir_fd, s.tmp, s.name, flag)
        except OSError as exc:
            if exc.errno in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                _refused.add(flag)
                log.info("renameat2 %s: %s; a local write made while a received file"
                         " goes in place may be overwritten",
                         "RENAME_NOREPLACE" if flag == RENAME_NOREPLACE else "RENAME_EXCHANGE",
                         exc.strerror)  # fmt: skip
                self._put_in_place(s)
                return
            if exc.errno == errno.EEXIST:  # created here since the check
                self._check_unchanged(s.dir_fd, s.name, s.path, None)
                raise LocalChanged(f"{s.path!r} changed locally during the session") from None
            if exc.errno == errno.ENOENT and flag == RENAME_EXCHANGE:
                raise LocalChanged(f"{s.path!r} vanished locally during the session") from None
            raise
        if flag == RENAME_NOREPLACE:
            return
        # Swapped out: the file the check saw, unless a write raced in.  The
        # exchange changed its ctime, so the rest of its signature tells.
        old = os.lstat(s.tmp, dir_fd=s.dir_fd)
        assert s.expect is not None  # RENAME_EXCHANGE: there was a file
        size, mtime_ns, _, ino = s.expect
        if stat.S_ISREG(old.st_mode) and (old.st_size, old.st_mtime_ns, old.st_ino) == (
            size, mtime_ns, ino
        ):  # fmt: skip
            faults.point("syncdir.unlink.replaced")
            with contextlib.suppress(OSError):  # else a stale temp, removed next time
                os.unlink(s.tmp, dir_fd=s.dir_fd)
            return
        faults.point("syncdir.rename.back")
        try:
            renameat2(s.dir_fd, s.tmp, s.name, RENAME_EXCHANGE)
        except OSError:
            s.tmp = ""  # it holds the local write: never removed, recovery puts it back
            raise
        if not stat.S_ISREG(old.st_mode):
            raise UnsafePath(f"{s.path!r} exists locally and is not a regular file")
        raise LocalChanged(f"{s.path!r} changed locally during the session")

    def discard(self, batch: list[Staged]) -> None:
        for s in batch:
            if s.fd >= 0:
                os.close(s.fd)
                s.fd = -1
            self._unlink_tmp(s)

    def _unlink_tmp(self, s: Staged) -> None:
        if not s.tmp:
            return
        faults.point("syncdir.unlink.temp")
        with contextlib.suppress(OSError):
            os.unlink(s.tmp, dir_fd=s.dir_fd)

    def write(
        self, path: str, data: bytes, mode: int, mtime_ms: int, expect: Signature | None
    ) -> os.stat_result:
        """Stage and commit one file."""
        (res,) = self.commit([self.stage(path, data, mode, mtime_ms, expect)])
        if isinstance(res, Exception):
            raise res
        return res

    def delete(self, path: str, expect: Signature | None) -> bool:
        """Remove a regular file if it is still as the scan saw it (LocalChanged,
        and the file left in place, if not)."""
        try:
            dfd, name, parent = self._parent(path, create=False)
        except FileNotFoundError:
            return False
        self._check_unchanged(dfd, name, path, expect)
        # Taken aside first (one atomic rename), then checked again: a local
        # write made since the check is put back, never removed.
        # its temp name says what it is, should a kill leave it there
        tmp = mark_name("d", [None if expect is None else _sig_mark(expect)], name)
        try:
            faults.point("syncdir.rename.deleted")
            os.rename(name, tmp, src_dir_fd=dfd, dst_dir_fd=dfd)
        except FileNotFoundError:
            return False
        self._dirty.add(parent)
        st = os.lstat(tmp, dir_fd=dfd)
        if expect is not None and (st.st_size, st.st_mtime_ns, st.st_ino) != (
            expect[0], expect[1], expect[3]
        ):  # fmt: skip
            faults.point("syncdir.rename.undeleted")
            with contextlib.suppress(FileExistsError):  # a write there since is newer still
                _rename_noreplace(dfd, tmp, name)
            raise LocalChanged(f"{path!r} changed locally during the session")
        faults.point("syncdir.unlink.deleted")
        os.unlink(tmp, dir_fd=dfd)
        return True

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
        """Make the entries of every changed directory durable (the renames)."""
        dirty, self._dirty = self._dirty, set()
        fds = [self._fds[rel] for rel in sorted(dirty) if rel in self._fds]
        if self.by_fs:
            syncfs(fds, "syncdir.syncfs.dirs")
        else:
            for fd in fds:
                faults.point("syncdir.fsync.dir")
                os.fsync(fd)

    def remove_stale_temps(
        self, names: list[str], older_than: float = 0.0, known: Iterable[str] = ()
    ) -> list[str]:
        """Remove temp files left behind by an interrupted run; with
        ``older_than``, only those not written to for that many seconds (a
        daemon's live links write theirs without holding the directory).

        A marked temp file (:func:`mark_name`) is only ever there while its
        run holds the directory, as the caller does: it is looked at whatever
        its age, and a local write it holds is put back (``known``: the
        paths it may have been taken from, for a name too long to be in its
        temp name).  Returns the paths put back (to be scanned again)."""
        now = time.time()
        restored: list[str] = []
        for rel in names:
            parent, _, name = rel.rpartition("/")
            if not is_temp_name(name):
                continue
            with contextlib.suppress(OSError, UnsafePath):
                dfd = self._dir(parent, create=False)
                mark = parse_mark(name)
                if mark is not None:
                    back = self._recover(dfd, parent, name, *mark, known)
                    if back is not None:
                        self._dirty.add(parent)
                        restored.append(f"{parent}/{back}" if parent else back)
                        continue
                elif older_than:
                    st = os.lstat(name, dir_fd=dfd)
                    if now - st.st_mtime < older_than:
                        continue
                faults.point("syncdir.unlink.stale")
                os.unlink(name, dir_fd=dfd)
        return restored

    def _recover(
        self, dfd: int, parent: str, tmp: str, kind: str, marks: list[Mark | None], ref: str,
        known: Iterable[str],
    ) -> str | None:  # fmt: skip
        """Look at a marked temp file a kill left: put a local write it holds
        back in place and return the target's name (the temp file then gone);
        None: it is to be removed (a staged file, the file the scan saw, or a
        local write that a later one at the target supersedes)."""
        st = os.lstat(tmp, dir_fd=dfd)
        if _mark_of(st) in marks or marks == [None]:
            return None  # staged, never exchanged; or the file the scan saw
        target = ref[1:] if ref[0] == "n" else _find_hashed(dfd, parent, ref[1:], known)
        if target is None or path_problem(target) or not stat.S_ISREG(st.st_mode):
            return None
        if kind == "x":
            # exchanged with a local write: put back while the staged file is
            # still there untouched (else the target was written since)
            try:
                now_there = _mark_of(os.lstat(target, dir_fd=dfd))
            except FileNotFoundError:
                return None
            if now_there != marks[0]:
                log.info("a local write to %s raced a received file before a crash;"
                         " a later write there supersedes it", target)  # fmt: skip
                return None
            faults.point("syncdir.rename.recover")
            renameat2(dfd, tmp, target, RENAME_EXCHANGE)
            faults.point("syncdir.unlink.stale")
            os.unlink(tmp, dir_fd=dfd)  # the staged file, exchanged back
        else:
            faults.point("syncdir.rename.recover")
            try:
                _rename_noreplace(dfd, tmp, target)
            except FileExistsError:  # a write there since is newer still
                return None
        log.info("%s: a local write that raced a peer's change before a crash is put back",
                 target)  # fmt: skip
        return target


def _find_hashed(dfd: int, parent: str, digest: str, known: Iterable[str]) -> str | None:
    """The name in directory ``parent`` (``dfd``) that hashes to ``digest``:
    one there now, or one of the ``known`` paths."""
    prefix = f"{parent}/" if parent else ""
    names = [p[len(prefix) :] for p in known if p.startswith(prefix)]
    for name in itertools.chain(os.listdir(dfd), names):
        if "/" not in name and _name_hash(name) == digest:
            return name
    return None
