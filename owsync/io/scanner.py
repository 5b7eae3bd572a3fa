"""The scanner: walk the sync directory and bring the records up to date.

Regular files only; symlinks are neither followed nor recorded.  A file
whose size, mtime, ctime and inode are what the last scan saw keeps its hash
without being read again.  owsync's own files (database, lock, temp files)
and hidden paths are skipped.

A peer's deletion is recorded before its file is removed (a tombstone that
carries the file's signature): a scan that finds that very file still there
keeps the tombstone and lists the path in ``unfinished``, for the writer to
remove it (:func:`finish_deletions`); any other file there is a re-creation.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable
from functools import partial

from ..core.filters import Filter
from ..core.paths import is_hidden, path_problem
from ..core.state import Record, observe_file, reconcile, tombstone
from .syncdir import LocalChanged, SyncDir, UnsafePath, is_temp_name, signature

log = logging.getLogger("owsync")


class ScanResult:
    __slots__ = ("records", "hashed", "stale_temps", "unfinished", "changed")

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.hashed = 0  # files read and hashed this time
        self.stale_temps: list[str] = []  # temp files left by an interrupted run
        self.unfinished: list[str] = []  # files of deletions an interrupted run recorded
        # the paths whose record differs from before (None: not worked out, a
        # whole scan): what a partial scan costs is these, not the tree
        self.changed: set[str] | None = None


# a file this small is read whole at once: hashlib.file_digest sets up a
# 256 KiB buffer per call, which costs more than hashing 2 KiB
SMALL_FILE = 64 * 1024


def hash_file(path: str) -> tuple[str, os.stat_result] | None:
    """SHA-256 and stat of a regular file, opened without following symlinks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_size >= SMALL_FILE:
            with open(fd, "rb", closefd=False) as f:
                return hashlib.file_digest(f, "sha256").hexdigest(), st
        data = os.read(fd, st.st_size + 1)  # short of what was asked: the end
        h = hashlib.sha256(data)
        if len(data) > st.st_size:  # it grew meanwhile: the rest as it comes
            while data := os.read(fd, SMALL_FILE):
                h.update(data)
        return h.hexdigest(), st
    finally:
        os.close(fd)


def descend_of(accept: Callable[[str], bool]) -> Callable[[str], bool] | None:
    """Which directories a walk for ``accept`` enters ('a/b/': whether to):
    a Filter's own answer (:meth:`Filter.may_hold`), unless its patterns
    reach every directory anyway (None: all, as ever)."""
    if isinstance(accept, Filter) and not accept.whole_tree:
        return accept.may_hold
    return None


def scan(
    root: str,
    records: dict[str, Record],
    accept: Callable[[str], bool],
    own: frozenset[str],
    now_ms: int | Callable[[], int],
    descend: Callable[[str], bool] | None = None,
) -> ScanResult:
    """Walk ``root`` and return the records after this scan.

    ``accept`` is the filter; ``own`` the relative paths of owsync's own
    files inside the root (skipped exactly, whatever their names).  Only the
    directories that can hold a path ``accept`` takes are walked:
    ``descend`` says which (relative, with a trailing '/'), by default the
    Filter's own answer; a group syncing /etc/passwd and /etc/shadow reads
    /etc alone, not its subtrees.
    """
    if descend is None:
        descend = descend_of(accept)
    seen: dict[str, Record] = {}
    keep: set[str] = set()
    result = ScanResult()
    stack = [("", root)]
    while stack:
        rel_dir, abs_dir = stack.pop()
        try:
            it = os.scandir(abs_dir)
        except OSError as exc:
            log.warning("cannot read directory %s: %s", abs_dir, exc.strerror)
            _keep_under(records, rel_dir, keep)
            continue
        with it:
            for entry in it:
                name = entry.name
                rel = f"{rel_dir}{name}"
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if not name.startswith(".") and (descend is None or descend(rel + "/")):
                            stack.append((rel + "/", entry.path))
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        continue  # symlinks, sockets, devices
                except OSError:
                    continue
                if is_temp_name(name):
                    result.stale_temps.append(rel)
                    continue
                if name.startswith(".") or rel in own or not accept(rel):
                    continue
                prev = records.get(rel)
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                sig = signature(st)
                if prev is not None and prev.sig == sig:
                    seen[rel] = prev
                    if prev.deleted:  # its removal never happened
                        result.unfinished.append(rel)
                    continue
                if path_problem(rel):
                    log.warning("skipping %r: name cannot be synced", rel)
                    continue
                hashed = hash_file(entry.path)
                if hashed is None:
                    log.warning("cannot read %s; keeping its last known state", rel)
                    keep.add(rel)
                    continue
                digest, st = hashed
                result.hashed += 1
                seen[rel] = observe_file(
                    prev,
                    rel,
                    digest,
                    st.st_size,
                    st.st_mode & 0o777,
                    st.st_mtime_ns // 1_000_000,
                    signature(st),
                )

    def in_scope(path: str) -> bool:
        return accept(path) and not is_hidden(path) and path not in own

    # A deletion is stamped with the time the walk ended, not began: one made
    # during the walk must not get a time before itself (a write made elsewhere
    # meanwhile would then beat it, and the file come back).
    if callable(now_ms):
        now_ms = now_ms()
    result.records = reconcile(records, seen, in_scope, keep, now_ms)
    return result


def _keep_under(records: dict[str, Record], rel_dir: str, keep: set[str]) -> None:
    keep.update(p for p in records if p.startswith(rel_dir))


def scan_paths(
    root: str,
    records: dict[str, Record],
    accept: Callable[[str], bool],
    own: frozenset[str],
    paths: set[str],
    now_ms: Callable[[], int],
    dirs: bool = True,
) -> ScanResult:
    """Bring the records up to date for ``paths`` only (what the watcher saw
    change): a file is looked at alone, a directory is walked, a path gone
    from disk makes tombstones of what was known at and under it.  The cost
    is that of those paths, not of the tree; records elsewhere are kept.
    ``dirs`` False: the paths are files (none was a directory), so nothing
    under them is looked for.  A directory that cannot hold a path the
    filter takes is not walked (as in :func:`scan`).
    """
    descend = descend_of(accept)
    seen: dict[str, Record] = {}
    keep: set[str] = set()
    gone: list[str] = []  # paths (files or directories) no longer on disk
    result = ScanResult()
    for rel in sorted(paths):
        if not rel or path_problem(rel) or is_hidden(rel):
            continue
        full = os.path.join(root, rel)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            gone.append(rel)
            continue
        except OSError:
            keep.add(rel)
            continue
        if stat.S_ISDIR(st.st_mode):
            if descend is not None and not descend(rel + "/"):
                gone.append(rel)  # nothing there is synced; whatever was known is not now
                continue
            inner = frozenset(o[len(rel) + 1 :] for o in own if o.startswith(rel + "/"))
            sub_descend = None if descend is None else partial(_accept_under, descend, rel)
            sub = scan(full, _under(records, rel), partial(_accept_under, accept, rel),
                       inner, now_ms, sub_descend)  # fmt: skip
            seen.update((f"{rel}/{p}", r._replace(path=f"{rel}/{p}"))
                        for p, r in sub.records.items() if not r.deleted)  # fmt: skip
            for p in sub.unfinished:
                seen[f"{rel}/{p}"] = sub.records[p]._replace(path=f"{rel}/{p}")
                result.unfinished.append(f"{rel}/{p}")
            result.hashed += sub.hashed
            result.stale_temps += [f"{rel}/{p}" for p in sub.stale_temps]
            gone.append(rel)  # what was known under it and is not seen now
            continue
        if not stat.S_ISREG(st.st_mode) or rel in own or not accept(rel):
            if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
                gone.append(rel)  # replaced by something that is not synced
            continue
        if is_temp_name(rel.rsplit("/", 1)[-1]):
            continue
        prev = records.get(rel)
        sig = signature(st)
        if prev is not None and prev.sig == sig:
            seen[rel] = prev
            if prev.deleted:  # a deletion under way: its removal never happened
                result.unfinished.append(rel)
            continue
        hashed = hash_file(full)
        if hashed is None:
            keep.add(rel)
            continue
        digest, st = hashed
        result.hashed += 1
        seen[rel] = observe_file(prev, rel, digest, st.st_size, st.st_mode & 0o777,
                                 st.st_mtime_ns // 1_000_000, signature(st))  # fmt: skip
    out = dict(records)  # a copy at C speed; then only the paths looked at
    changed: set[str] = set()
    for path, rec in seen.items():
        if records.get(path) != rec:
            out[path] = rec
            changed.add(path)
    candidates = {g for g in gone if g in records}
    if gone and dirs:
        prefixes = tuple(g + "/" for g in gone)
        candidates.update(p for p in records if p.startswith(prefixes))
    now = now_ms()
    for path in candidates:
        rec = records[path]
        if path in seen or path in keep:
            continue
        if rec.deleted:
            if rec.sig is not None:  # a deletion under way whose file is gone is done
                out[path] = rec._replace(sig=None)
                changed.add(path)
            continue
        if not accept(path) or is_hidden(path) or path in own:
            continue
        out[path] = tombstone(rec, max(now, rec.mtime + 1))
        changed.add(path)
    result.records, result.changed = out, changed
    return result


def _accept_under(accept: Callable[[str], bool], rel: str, path: str) -> bool:
    """``accept`` for a path relative to the directory ``rel``."""
    return accept(f"{rel}/{path}")


def _under(records: dict[str, Record], rel: str) -> dict[str, Record]:
    """The records below directory ``rel``, keyed relative to it."""
    prefix = rel + "/"
    n = len(prefix)
    return {p[n:]: r._replace(path=p[n:]) for p, r in records.items() if p.startswith(prefix)}


def finish_deletions(sdir: SyncDir, result: ScanResult) -> None:
    """Remove the files of the deletions a crash interrupted (``unfinished``):
    their tombstones are then plain ones.  A file written meanwhile stays, its
    tombstone still marked: the next scan takes it for a re-creation."""
    for path in result.unfinished:
        rec = result.records[path]
        try:
            sdir.delete(path, rec.sig)
        except LocalChanged as exc:
            log.info("not deleting %s: %s", path, exc)
            continue
        except (UnsafePath, OSError) as exc:
            log.warning("not deleting %s: %s", path, getattr(exc, "strerror", None) or exc)
            continue
        result.records[path] = rec._replace(sig=None)
        if result.changed is not None:  # a partial scan: saved with what it changed
            result.changed.add(path)
