"""The version store: what a session or a local edit replaced, kept to restore.

One store per node, outside what it syncs (a store inside the sync directory
is excluded from it).  Layout::

    <dir>/index.json                  versions, bases, the next id (replaced atomically)
    <dir>/objects/<2 hex>/<sha256>    contents, each stored once, by hash

A *version* is a content that was replaced or removed here: by a peer's
newer write (``replaced``), by a peer's deletion (``deleted``), by a write
made here that lost last-writer-wins before it reached any peer
(``conflict``: the losing write itself), by a local edit or deletion
(``edited``, ``deleted`` with no peer), or by a restore (``restored``).

A *base* is the last content of each file that owsync saw (received, or
found by a scan), so that a local edit, which overwrites the file before
owsync hears of it, still leaves the version it replaced.  A base whose write
was made here and has not yet been sent to a peer is *pending*: if a peer's
write replaces it before it is sent, that is a conflict.

Limits (count per file, total size, age) are applied each time the index is
saved: the oldest go first, bases not needed by a version before versions.
An object is written (temp file, fsync, rename) before the index that names
it, and the index before the file it describes is overwritten, so a crash
leaves at worst an object no index names, removed at the next save.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Collection, Mapping

from ..core.settings import BY_ATTR
from ..core.state import Record
from . import faults
from .database import fsync_dir, write_file
from .syncdir import have_syncfs, syncfs

log = logging.getLogger("owsync")

REASONS = ("replaced", "deleted", "conflict", "edited", "restored")
DEFAULT_KEEP: int = BY_ATTR["versions_keep"].default  # the settings schema's
DEFAULT_MAX_SIZE: int = BY_ATTR["versions_max_size"].default
DEFAULT_MAX_AGE_DAYS: int = BY_ATTR["versions_max_age"].default
_TMP = ".tmp-"
FLUSH_BYTES = 8 * 1024 * 1024  # kept contents held in memory before a save


class Limits:
    """What the store may hold: ``keep`` versions per file (0: no store at all),
    ``max_size`` bytes of contents, versions no older than ``max_age_days``."""

    def __init__(
        self,
        keep: int = DEFAULT_KEEP,
        max_size: int = DEFAULT_MAX_SIZE,
        max_age_days: int = DEFAULT_MAX_AGE_DAYS,
    ) -> None:
        self.keep, self.max_size, self.max_age_days = keep, max_size, max_age_days


def looks_like_text(data: bytes) -> bool:
    if b"\0" in data[:8192]:
        return False
    try:
        data[:65536].decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start > 65532  # a character cut at the end of the sample
    return True


# --- pure: what to drop ------------------------------------------------------


def prune(
    versions: list[dict], bases: dict[str, list], size_of, limits: Limits, now_ms: int
) -> tuple[list[dict], dict[str, list]]:
    """The versions and bases that stay within ``limits`` (oldest dropped first).

    ``versions`` are in the order they were kept; ``size_of(hash)`` is a
    content's size.  Bases go before versions when space runs out, the
    largest first: a base only lets a future local edit be undone.
    """
    cutoff = now_ms - limits.max_age_days * 86_400_000
    per_path: dict[str, int] = {}
    newest_first = []
    for v in reversed(versions):
        if v["kept"] < cutoff:
            continue
        n = per_path.get(v["path"], 0)
        if n < limits.keep:
            per_path[v["path"]] = n + 1
            newest_first.append(v)
    kept = newest_first[::-1]
    bases = {p: list(b) for p, b in bases.items()}
    refs: dict[str, int] = {}
    for h in [v["hash"] for v in kept] + [b[0] for b in bases.values() if b[2]]:
        refs[h] = refs.get(h, 0) + 1
    size = sum(size_of(h) for h in refs)

    def unref(h: str) -> int:
        refs[h] -= 1
        if refs[h]:
            return 0
        del refs[h]
        return size_of(h)

    if size > limits.max_size:
        for _, b in sorted(bases.items(), key=lambda kv: -size_of(kv[1][0])):
            if size <= limits.max_size:
                break
            if b[2] and refs[b[0]] == 1:  # a content some version shares frees nothing
                b[2] = False  # a write made here keeps its hash: it tells a conflict
                size -= unref(b[0])
    bases = {p: b for p, b in bases.items() if b[2] or b[1]}
    first = 0
    while first < len(kept) and size > limits.max_size:
        size -= unref(kept[first]["hash"])
        first += 1
    return kept[first:], bases


# --- the store on disk ---------------------------------------------------------


# A received file's content is kept as its base (so that a later edit here
# keeps what it replaced) for the first files of a session only: a bulk sync
# does not write everything twice.  Past them, the base keeps the hash alone;
# the content an edit replaces is then still kept by every peer it reaches.
BASES_PER_SESSION = 64


class VersionStore:
    def __init__(self, path: str, limits: Limits) -> None:
        self.dir = path
        self.limits = limits
        self.versions: list[dict] = []
        # path -> [hash, pending, content kept]; a base whose content did not
        # fit keeps its hash alone (conflicts are still told apart)
        self.bases: dict[str, list] = {}
        self.next_id = 1
        self.sizes: dict[str, int] = {}  # hash -> size, of the objects on disk
        self.stored = 0  # their total
        # contents of versions kept since the last save, written only if they
        # survive its pruning (a burst of replaces keeps only what fits)
        self._unwritten: dict[str, bytes] = {}
        self._unwritten_bytes = 0
        self.fresh = True  # no index yet: every file's base is still to take
        self.changed = False
        self._dirs_made: set[str] = set()
        self._dirty_dirs: set[str] = set()  # object directories with new entries
        self.by_fs = have_syncfs()  # one syncfs makes every new content durable

    # loading -----------------------------------------------------------------

    @classmethod
    def open(cls, path: str, limits: Limits, tidy: bool = True) -> VersionStore:
        """Load the store; ``tidy`` (only for its writer, under the directory
        lock) removes the temp files of a write a crash interrupted."""
        store = cls(path, limits)
        store._load(tidy)
        return store

    def index_sig(self) -> tuple | None:
        """What tells that the index changed on disk (another writer saved it)."""
        try:
            st = os.stat(os.path.join(self.dir, "index.json"))
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    @classmethod
    def index_only(cls, path: str, limits: Limits) -> VersionStore:
        """The index alone, for reading (status, listings): no walk of the contents."""
        store = cls(path, limits)
        store._load_index()
        return store

    def _load_index(self) -> None:
        try:
            with open(os.path.join(self.dir, "index.json"), "rb") as f:
                data = json.loads(f.read())
            self.versions = [v for v in data["versions"] if _valid(v)]
            self.bases = {
                p: [b[0], bool(b[1]), bool(b[2]) if len(b) > 2 else True]
                for p, b in data["bases"].items()
                if _is_hash(b[0])
            }
            self.next_id = max(int(data["next"]), 1)
            self.fresh = False
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            log.warning("version store %s: unreadable index (%s): starting afresh", self.dir, exc)

    def _load(self, tidy: bool) -> None:
        self._load_index()
        self.sizes = {}
        objects = os.path.join(self.dir, "objects")
        with contextlib.suppress(FileNotFoundError):
            for sub in os.scandir(objects):
                if not sub.is_dir(follow_symlinks=False):
                    continue
                for e in os.scandir(sub.path):
                    if e.name.startswith(_TMP):
                        if tidy:
                            with contextlib.suppress(OSError):
                                faults.point("versions.unlink.temp")
                                os.unlink(e.path)  # a write a crash interrupted
                    elif e.is_file(follow_symlinks=False):
                        self.sizes[e.name] = e.stat(follow_symlinks=False).st_size
        self.stored = sum(self.sizes.values())
        # an index entry whose object is gone (removed by hand) is no version
        self.versions = [v for v in self.versions if v["hash"] in self.sizes]
        for b in self.bases.values():
            b[2] = b[2] and b[0] in self.sizes

    # contents ----------------------------------------------------------------

    def _object(self, digest: str) -> str:
        return os.path.join(self.dir, "objects", digest[:2], digest)

    def size_of(self, digest: str) -> int:
        size = self.sizes.get(digest)
        if size is None:
            data = self._unwritten.get(digest)
            size = len(data) if data is not None else 0
        return size

    def put(self, digest: str, data: bytes) -> None:
        """Store a content unless it is there already; it is made durable (with
        every other) before an index names it."""
        if digest in self.sizes:
            return
        path = self._object(digest)
        parent = os.path.dirname(path)
        if parent not in self._dirs_made:
            faults.point("versions.mkdir.objects")
            os.makedirs(parent, mode=0o700, exist_ok=True)
            self._dirs_made.add(parent)
        tmp = os.path.join(parent, f"{_TMP}{os.urandom(6).hex()}")
        write_file(path, tmp, data, fsync=not self.by_fs, exclusive=True,
                   points="versions.{}.object")  # fmt: skip
        self._dirty_dirs.add(parent)
        self.sizes[digest] = len(data)
        self.stored += len(data)

    def read(self, digest: str) -> bytes:
        with open(self._object(digest), "rb") as f:
            return f.read()

    def wants_base(self, taken: int, size: int) -> bool:
        """Whether a received file's content becomes its base, ``taken`` such
        contents kept already in this session."""
        return taken < BASES_PER_SESSION and self.room_for(size)

    def room_for(self, size: int) -> bool:
        """Whether a base of ``size`` bytes fits the size limit now (counting
        every content on disk, also those the next save removes)."""
        return self.stored + size <= self.limits.max_size

    # versions and bases ------------------------------------------------------

    def keep(
        self,
        path: str,
        digest: str,
        data: bytes,
        mtime: int,
        mode: int,
        reason: str,
        peer: str = "",
        now_ms: int | None = None,
    ) -> dict:
        """Keep ``data`` (the content of ``path`` about to be replaced or removed).

        It is on disk once :meth:`save` returns (which the caller runs before
        replacing anything); many unsaved contents save themselves.
        """
        if digest not in self.sizes and digest not in self._unwritten:
            self._unwritten[digest] = data
            self._unwritten_bytes += len(data)
        kept = now_ms if now_ms is not None else int(time.time() * 1000)
        v = {
            "id": self.next_id,
            "path": path,
            "hash": digest,
            "size": len(data),
            "mtime": mtime,
            "mode": mode & 0o777,
            "reason": reason,
            "peer": peer,
            "kept": kept,
            "text": looks_like_text(data),
        }
        self.next_id += 1
        self.versions.append(v)
        self.changed = True
        if self._unwritten_bytes > FLUSH_BYTES:
            self.save(kept, collect=False)
        return v

    def keep_replaced(
        self,
        path: str,
        digest: str,
        data: bytes,
        mtime: int,
        mode: int,
        reason: str,
        peer: str,
        now_ms: int,
    ) -> dict:
        """Keep the content of ``path`` that a peer's write, a peer's deletion
        or a restore is about to replace (see :meth:`keep`); a write made here
        that no peer has received yet is kept as a ``conflict``: it lost."""
        if self.pending(path, digest):
            reason = "conflict"
        return self.keep(path, digest, data, mtime, mode, reason, peer, now_ms)

    def keep_base_version(self, path: str, mtime: int, mode: int, reason: str, now_ms: int):
        """Keep the base of ``path`` as a version (its file is already gone or
        rewritten: a local edit or deletion); None when no base was kept."""
        b = self.bases.get(path)
        if b is None or not b[2] or b[0] not in self.sizes:
            return None
        data = self.read(b[0])
        return self.keep(path, b[0], data, mtime, mode, reason, "", now_ms)

    def pending(self, path: str, digest: str) -> bool:
        """Whether ``digest`` is a write made here that no peer has received yet."""
        b = self.bases.get(path)
        return b is not None and b[0] == digest and b[1]

    def set_base(self, path: str, digest: str, data: bytes | None, pending: bool) -> None:
        """Remember ``digest`` as the last content of ``path``: its content too
        when ``data`` is given and there is room, or when it is stored already."""
        b = self.bases.get(path)
        if b is not None and b[0] == digest and (b[2] or data is None):
            if b[1] != pending:
                b[1] = pending
                self.changed = True
            return
        if digest not in self.sizes:
            if data is None or not self.room_for(len(data)):
                if pending:  # a write made here: its hash tells a conflict
                    self.bases[path] = [digest, True, False]
                    self.changed = True
                elif self.bases.pop(path, None) is not None:
                    self.changed = True
                return
            self.put(digest, data)
        self.bases[path] = [digest, pending, True]
        self.changed = True

    def sent(self, path: str, digest: str) -> None:
        """A peer received ``digest`` for ``path``: no longer a pending write."""
        b = self.bases.get(path)
        if b is not None and b[0] == digest and b[1]:
            if b[2]:
                b[1] = False
            else:  # its hash alone only told a conflict apart while it was pending
                del self.bases[path]
            self.changed = True

    def forget_base(self, path: str) -> None:
        if self.bases.pop(path, None) is not None:
            self.changed = True

    def track(
        self,
        loaded: Mapping[str, Record],
        records: Mapping[str, Record],
        now_ms: int,
        only: Collection[str] | None,
        read: Callable[[str], bytes | None],
    ) -> None:
        """What a scan found (``records``, against the database's ``loaded``):
        keep what local edits and deletions replaced (from the bases), and
        take the new contents as bases: writes made here, pending until a
        peer has them.  ``only``: the paths a partial scan changed (None:
        every record); ``read(path)``: the file's content now (None: gone)."""
        items = records.items() if only is None else ((p, records[p]) for p in only if p in records)
        for path, rec in items:
            old = loaded.get(path)
            if old is not None and old.deleted:
                old = None  # only a live record had a base
            if rec.deleted:
                if old is not None:
                    base = self.bases.get(path)
                    if base is not None and base[0] == old.hash:
                        self.keep_base_version(path, old.mtime, old.mode, "deleted", now_ms)
                    self.forget_base(path)
                continue
            if old is not None and old.hash == rec.hash:
                if self.fresh and path not in self.bases:
                    self._take_base(rec, False, read)
                continue
            if old is not None and path in self.bases and self.bases[path][0] == old.hash:
                self.keep_base_version(path, old.mtime, old.mode, "edited", now_ms)
            self._take_base(rec, True, read)

    def _take_base(self, rec: Record, pending: bool, read: Callable[[str], bytes | None]) -> None:
        """A scanned file's content as its base, if there is room (its hash
        alone otherwise, or when the content is stored already)."""
        assert rec.hash is not None  # from track: live
        if rec.hash in self.sizes or not self.room_for(rec.size):
            self.set_base(rec.path, rec.hash, None, pending)
            return
        data = read(rec.path)
        if data is not None and hashlib.sha256(data).hexdigest() == rec.hash:  # as scanned
            self.set_base(rec.path, rec.hash, data, pending)

    # saving ------------------------------------------------------------------

    def save(self, now_ms: int | None = None, collect: bool = True) -> None:
        """Apply the limits, write the index durably; with ``collect``, remove
        the contents it does not name (not mid-session: a received file's
        content waits there to become its base once the file is in place)."""
        if not self.changed and not self.fresh:
            if collect:
                self.collect()
            return
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        before = len(self.versions)
        self.versions, self.bases = prune(
            self.versions, self.bases, self.size_of, self.limits, now_ms
        )
        if len(self.versions) < before:
            log.debug("version store: %d version(s) pruned", before - len(self.versions))
        faults.point("versions.mkdir.store")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        unwritten, self._unwritten, self._unwritten_bytes = self._unwritten, {}, 0
        for v in self.versions:
            data = unwritten.pop(v["hash"], None)
            if data is not None:
                self.put(v["hash"], data)
        self._make_durable()
        data = json.dumps(
            {"format": 1, "next": self.next_id, "versions": self.versions, "bases": self.bases},
            separators=(",", ":"),
        ).encode()
        index = os.path.join(self.dir, "index.json")
        write_file(index, index + ".tmp", data, points="versions.{}.index")
        fsync_dir(self.dir, "versions.fsync_dir.index")
        self.changed = self.fresh = False
        if collect:
            self.collect()

    def _make_durable(self) -> None:
        """The new contents and their directory entries, before an index names them."""
        dirs = sorted(self._dirty_dirs)
        self._dirty_dirs.clear()
        if not dirs:
            return
        if self.by_fs:
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                syncfs([fd], "versions.syncfs.objects")
            finally:
                os.close(fd)
            return
        for d in dirs:
            fsync_dir(d, "versions.fsync_dir.objects")

    def collect(self) -> None:
        """Remove the contents no version or base names."""
        live = {v["hash"] for v in self.versions} | {b[0] for b in self.bases.values() if b[2]}
        for digest in [h for h in self.sizes if h not in live]:
            with contextlib.suppress(OSError):
                faults.point("versions.unlink.object")
                os.unlink(self._object(digest))
            self.stored -= self.sizes.pop(digest)

    # reading -----------------------------------------------------------------

    def listing(self, path: str | None = None) -> list[dict]:
        """Kept versions, newest first (of one path, or all)."""
        out = [v for v in self.versions if path is None or v["path"] == path]
        return out[::-1]

    def find(self, version_id: int) -> dict | None:
        for v in self.versions:
            if v["id"] == version_id:
                return v
        return None

    def summary(self) -> dict:
        live = {v["hash"] for v in self.versions} | {b[0] for b in self.bases.values() if b[2]}
        return {
            "dir": self.dir,
            "bytes": sum(self.sizes.get(h, 0) for h in live),
            "objects": len(live),
            "keep": self.limits.keep,
            "max_size": self.limits.max_size,
            "max_age_days": self.limits.max_age_days,
        }


_HASH = re.compile(r"[0-9a-f]{64}")


def _is_hash(h) -> bool:
    return type(h) is str and _HASH.fullmatch(h) is not None


def _valid(v) -> bool:
    return (
        isinstance(v, dict)
        and type(v.get("id")) is int
        and type(v.get("path")) is str
        and _is_hash(v.get("hash"))
        and v.get("reason") in REASONS
        and type(v.get("kept")) is int
    )
