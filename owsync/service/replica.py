"""The sync directory and its database, held under the lock for one session.

What every session does to its replica, whatever the protocol: open (lock,
load, scan), write received files (whole, or streamed a chunk at a time),
put them in place in batches, apply a peer's deletions, keep what is
replaced in the version store, save.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from typing import NamedTuple

from ..core.paths import is_hidden, path_problem
from ..core.state import (
    TOMBSTONE_TTL_MS,
    Record,
    deleted_by_peer,
    pending_deletion,
    received,
)
from ..io import database, scanner
from ..io.syncdir import LocalChanged, Staged, SyncDir, UnsafePath, is_temp_name, signature
from ..io.versions import VersionStore
from .context import Context

log = logging.getLogger("owsync")

BATCH_BYTES = 8 * 1024 * 1024
# Files new to this node wait in larger batches where one syncfs(2) makes a
# batch durable: each syncfs is a journal commit and a flush, and a new file
# replaces nothing, so keeping it back costs only its temp name and memory.
NEW_BATCH_FILES = 16384
NEW_BATCH_BYTES = 64 * 1024 * 1024
STALE_TEMP_AGE = 300.0  # seconds a temp file is left unwritten before it counts as stale


class Applied(NamedTuple):
    """What a step of the replica did to the directory (its return value)."""

    changed: tuple[str, ...] = ()  # paths written or removed here, in order
    removed: tuple[str, ...] = ()  # those of them removed (a peer's deletions)
    conflicts: tuple[str, ...] = ()  # writes made here that lost to the peer's

    @property
    def received(self) -> int:
        return len(self.changed) - len(self.removed)

    @property
    def deleted(self) -> int:
        return len(self.removed)

    def then(self, later: Applied) -> Applied:
        """This step and a later one, as one."""
        if later == NOTHING:
            return self
        return Applied(
            self.changed + later.changed,
            self.removed + later.removed,
            self.conflicts + later.conflicts,
        )


NOTHING = Applied()


class Tally:
    """The sum of a replica's steps, kept by the one driver that runs them."""

    def __init__(self) -> None:
        self._changed: list[str] = []
        self._removed: list[str] = []
        self._conflicts: list[str] = []

    def add(self, step: Applied) -> Applied:
        self._changed += step.changed
        self._removed += step.removed
        self._conflicts += step.conflicts
        return step

    def total(self) -> Applied:
        return Applied(tuple(self._changed), tuple(self._removed), tuple(self._conflicts))


class Replica:
    """The sync directory and its database, held under the lock for one session."""

    def __init__(
        self,
        ctx: Context,
        syncdir: SyncDir | None = None,
        journal: bool = False,
        temps_older_than: float | None = None,
        peer: str = "local",
    ) -> None:
        """``journal``: record changes in the database's journal (the daemon's
        short steps) rather than writing it whole (a session, once).
        ``peer``: who replaces what this replica keeps as versions (logs too)."""
        self.peer = peer
        self.journal = journal
        # temp files to clean up: a daemon's live links stage theirs without the
        # directory, so there only those left alone for a while are stale
        if temps_older_than is None:
            temps_older_than = STALE_TEMP_AGE if ctx.live is not None else 0.0
        self.temps_older_than = temps_older_than
        self.ctx = ctx
        self.own = ctx.own_relpaths()
        # a live link stages received files before it takes the directory
        self.dir = syncdir if syncdir is not None else SyncDir(ctx.root)
        self.root = os.path.realpath(ctx.root)  # recorded in the database it goes with
        self.lock = database.DirLock(ctx.db_path)
        self.loaded: dict[str, Record] | None = None
        self._cached: tuple[dict[str, Record], str | None, int] | None = None
        self._cached_store: VersionStore | None = None
        self.gen: str | None = None  # the database's generation, and its journal's lines
        self.lines = 0
        self.touched: set[str] | None = None  # records changed since open (None: unknown)
        self.records: dict[str, Record] = {}
        self.pending: list[tuple[Staged, Record]] = []  # received, not yet in place
        self.pending_bytes = 0
        self.pending_replacing = 0  # of them, files that replace one here
        self.pending_replacing_bytes = 0
        self._accepted: dict[str, bool] = {}
        self.locked = False
        self.local_changes = False  # set by open(): its scan found local writes
        self.store: VersionStore | None = None
        self.bases_taken = 0  # received contents stored as bases this session
        self.incoming: Staged | None = None  # v2: the file being received
        self.incoming_base: list[bytes] | None = None  # its content, kept as its base

    def accepts(self, path: str) -> bool:
        """Whether a path (ours or a peer's) is one this node syncs (memoized)."""
        ok = self._accepted.get(path)
        if ok is None:
            ok = self._accepted[path] = (
                path_problem(path) is None
                and not is_hidden(path)
                and path not in self.own
                and not (self.ctx.own_prefix is not None and path.startswith(self.ctx.own_prefix))
                and not is_temp_name(path.rsplit("/", 1)[-1])
                and self.ctx.filter(path)
            )
        return ok

    def lock_dir(self, timeout: float) -> None:
        """Take the directory: the in-process owner (if shared), then the flock."""
        if self.locked:
            return
        owner = self.ctx.owner
        if owner is not None and not owner.acquire(timeout=timeout):
            raise database.LockBusy("another session is using the sync directory")
        try:
            self.lock.acquire(timeout)
        except BaseException:
            if owner is not None:
                owner.release()
            raise
        self.locked = True

    def unlock_dir(self) -> None:
        if self.locked:
            self.locked = False
            self.lock.release()
            if self.ctx.owner is not None:
                self.ctx.owner.release()

    def use_cached(
        self,
        cached: tuple[dict[str, Record], str | None, int] | None,
        store: VersionStore | None = None,
    ) -> None:
        """Open from the database (records, generation, journal lines) and the
        version store as the caller knows they are on disk (the daemon keeps
        them between its steps) instead of loading them; None: load."""
        self._cached = cached
        self._cached_store = store

    def open(self, paths: set[str] | None = None, dirs: bool = True) -> dict[str, Record]:
        """Take the directory (if not yet), load the database, scan.

        ``paths``: scan only these (what the watcher saw change), not the
        tree."""
        self.lock_dir(self.ctx.lock_timeout)
        try:
            if self._cached is not None:
                loaded, self.gen, self.lines = self._cached
            else:
                loaded, self.gen, self.lines = database.load_gen(self.ctx.db_path, root=self.root)
            res = self._scan(loaded, paths, dirs)
            if res.stale_temps:
                known = loaded.keys() | res.records.keys()
                if self.dir.remove_stale_temps(res.stale_temps, self.temps_older_than, known):
                    # a local write a crash left aside is back in place: seen now
                    res = self._scan(loaded, paths, dirs)
            now_ms = self.now_ms()
            if res.unfinished:
                scanner.finish_deletions(self.dir, res)
            self.store = self._cached_store or self.ctx.open_store()
            if self.store is not None:
                self.store.track(loaded, res.records, now_ms, res.changed, self._read)
        except BaseException:
            self.dir.close()
            self.unlock_dir()
            raise
        self.loaded, self.records = loaded, res.records
        self.touched = set(res.changed) if res.changed is not None else None
        # local writes found by this scan: whoever scans first (a session, a
        # rescan) must let the daemon know, or the change reaches one peer only
        if res.changed is not None:
            self.local_changes = any(
                p not in loaded or not r.same_version(loaded[p])
                for p in res.changed
                if (r := res.records.get(p)) is not None
            )
        else:
            self.local_changes = loaded.keys() != res.records.keys() or any(
                not r.same_version(loaded[p]) for p, r in res.records.items()
            )
        return self.records

    def _read(self, path: str) -> bytes | None:
        """A file's content as it is now; None when it cannot be read."""
        try:
            data, _ = self.dir.read(path)
        except (OSError, UnsafePath):
            return None
        return data

    def _scan(self, loaded: dict[str, Record], paths: set[str] | None, dirs: bool):
        if paths is None:
            return scanner.scan(self.ctx.root, loaded, self._scan_filter(), self.own, self.now_ms)
        return scanner.scan_paths(
            self.ctx.root, loaded, self._scan_filter(), self.own, paths, self.now_ms, dirs
        )

    def _scan_filter(self):
        prefix, flt = self.ctx.own_prefix, self.ctx.filter
        if prefix is None:
            return flt
        return flt.outside(prefix)  # a Filter still: the scanner walks only where it can match

    def stage(self, record: Record, data: bytes) -> Applied:
        """Write a received file to a temp file; it goes in place with its batch
        (what a batch put in place, if this one completed it)."""
        if not self.begin_file(record):
            return NOTHING
        self.add_chunk(data)
        return self.end_file(record)

    def _wants_base(self, size: int) -> bool:
        store = self.store
        return store is not None and store.wants_base(self.bases_taken, size)

    def begin_file(self, record: Record) -> bool:
        """Open a temp file for a file on its way; False when it is to be skipped."""
        local = self.records.get(record.path)
        expect = local.sig if local is not None and not local.deleted else None
        try:
            self.incoming = self.dir.open_stage(record.path, expect)
        except (LocalChanged, UnsafePath) as exc:
            skipped("writing", exc)
            return False
        self.incoming_base = [] if self._wants_base(record.size) else None
        return True

    def add_chunk(self, data: bytes) -> None:
        if self.incoming is None:
            return  # skipped: its chunks go nowhere
        self.dir.append(self.incoming, data)
        if self.incoming_base is not None:
            self.incoming_base.append(data)

    def drop_file(self) -> None:
        if self.incoming is not None:
            self.dir.discard([self.incoming])
        self.incoming = self.incoming_base = None

    def end_file(self, record: Record) -> Applied:
        """The file is whole and verified: it goes in place with its batch
        (what the batch did, when this file filled it)."""
        staged, base = self.incoming, self.incoming_base
        self.incoming = self.incoming_base = None
        if staged is None:
            return NOTHING
        self.dir.finish_stage(staged, record.mode, record.mtime)
        if base is not None:
            # a base is taken only with a store (_wants_base); a received file is live
            assert self.store is not None and record.hash is not None
            self.store.put(record.hash, b"".join(base))  # its base, once in place
            self.bases_taken += 1
        self._add_pending(staged, record)
        return self.commit() if self._batch_full() else NOTHING

    def _add_pending(self, staged: Staged, record: Record) -> None:
        self.pending.append((staged, record))
        self.pending_bytes += staged.size
        if staged.expect is not None:
            self.pending_replacing += 1
            self.pending_replacing_bytes += staged.size

    def _batch_full(self) -> bool:
        """Whether the pending files are due to go in place: a batch of at
        most ``dir.batch_files`` files (each holds a descriptor without
        syncfs) and BATCH_BYTES, except that with syncfs, files new here count
        only towards NEW_BATCH_FILES and NEW_BATCH_BYTES."""
        if not self.dir.by_fs:
            return len(self.pending) >= self.dir.batch_files or self.pending_bytes >= BATCH_BYTES
        return (
            self.pending_replacing >= self.dir.batch_files
            or self.pending_replacing_bytes >= BATCH_BYTES
            or len(self.pending) >= NEW_BATCH_FILES
            or self.pending_bytes >= NEW_BATCH_BYTES
        )

    def _touch(self, path: str) -> None:
        if self.touched is not None:
            self.touched.add(path)

    def queue(self, staged: Staged, record: Record, expect) -> None:
        """A file staged elsewhere (a live link) goes in place with the batch,
        if the file there still has signature ``expect`` (None: absent)."""
        staged.expect = expect
        self._add_pending(staged, record)

    def commit(self) -> Applied:
        """Keep what the batch replaces, make the staged files durable, rename
        them into place; record them.  Returns the paths written and conflicts."""
        batch, self.pending, self.pending_bytes = self.pending, [], 0
        self.pending_replacing = self.pending_replacing_bytes = 0
        if not batch:
            return NOTHING
        conflicts: list[str] = []
        # (a batch of new files replaces nothing: no save of the store before it)
        if self.store is not None and any(s.expect is not None for s, _ in batch):
            for _, record in batch:
                if self.keep_local(record.path, "replaced"):
                    conflicts.append(record.path)
            self.store.save(self.now_ms(), collect=False)  # durable before anything is replaced
        outcomes = self.dir.commit([staged for staged, _ in batch])
        written: list[str] = []
        for (_, record), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):
                skipped("writing", outcome)
            else:
                self.records[record.path] = received(record, signature(outcome))
                self._touch(record.path)
                written.append(record.path)
                if self.store is not None:
                    assert record.hash is not None  # a received file is live
                    self.store.set_base(record.path, record.hash, None, pending=False)
        return Applied(tuple(written), (), tuple(conflicts))

    def apply_deletions(self, deletions: list[Record]) -> Applied:
        """Apply a peer's deletions: the paths removed, and the conflicts."""
        if not deletions:
            return NOTHING
        conflicts: list[str] = []
        if self.store is not None:
            for remote in deletions:
                if self.keep_local(remote.path, "deleted"):
                    conflicts.append(remote.path)
            self.store.save(self.now_ms(), collect=False)  # durable before anything is removed
        # Write-ahead: the peer's tombstones are saved before any file is removed,
        # each marked with the signature of its file (pending_deletion).  Killed
        # after an unlink, the node would otherwise find the file gone, take that
        # for a deletion of its own stamped at its restart, and delete a
        # re-creation made meanwhile; killed before, its next scan completes it.
        before = {remote.path: self.records[remote.path] for remote in deletions}
        for remote in deletions:
            self.records[remote.path] = pending_deletion(before[remote.path], remote)
            self._touch(remote.path)
        self._persist()
        removed: list[str] = []
        for remote in deletions:
            local = before[remote.path]
            try:
                self.dir.delete(remote.path, local.sig)
            except (LocalChanged, UnsafePath) as exc:
                skipped("deleting", exc)
                self.records[remote.path] = local  # not deleted; saved at the end
                continue
            self.records[remote.path] = deleted_by_peer(local, remote)  # done: saved at the end
            if self.store is not None:
                self.store.forget_base(remote.path)
            removed.append(remote.path)
        return Applied(tuple(removed), tuple(removed), tuple(conflicts))

    def learn(self, tombstones: list[Record]) -> int:
        """Record a peer's deletions of paths this node has no record of (no
        file to remove); how many.  One past the tombstones' time to live is
        left out: the next scan would drop it again."""
        now = self.now_ms()
        learned = 0
        for remote in tombstones:
            if remote.path in self.records or now - remote.mtime > TOMBSTONE_TTL_MS:
                continue
            path = remote.path
            self.records[path] = Record(path, None, remote.mtime, 0, remote.mode, True)
            self._touch(path)
            learned += 1
        return learned

    def write_local(self, path: str, data: bytes, digest: str, mode: int) -> bool:
        """Write ``data`` (of hash ``digest``) as a new local write of ``path``
        (a restore): it then syncs, and wins.  What it replaces is kept as a
        version.  False when the file holds that content already."""
        cur = self.records.get(path)
        live = cur if cur is not None and not cur.deleted else None
        if live is not None and live.hash == digest:
            return False
        if live is not None and self.store is not None:
            self.keep_local(path, "restored")
            self.store.save(self.now_ms())
        mtime = self.now_ms()
        if cur is not None:
            mtime = max(mtime, cur.mtime + 1)
        st = self.dir.write(path, data, mode, mtime, live.sig if live is not None else None)
        self.records[path] = Record(path, digest, mtime, len(data), mode, False, signature(st))
        self._touch(path)
        if self.store is not None:
            self.store.set_base(path, digest, None, pending=True)
        return True

    def now_ms(self) -> int:
        return int(self.ctx.clock() * 1000)

    def keep_local(self, path: str, reason: str) -> bool:
        """Keep the local file ``path`` in the store before a peer replaces it;
        True when that was a conflict.

        A write made here that no peer has received yet is a conflict: it
        lost last-writer-wins.  A file changed since the scan is left alone
        (the write is skipped too).
        """
        store = self.store
        assert store is not None  # every caller keeps versions only with a store
        local = self.records.get(path)
        if local is None or local.deleted:
            return False
        assert local.hash is not None  # live
        try:
            data, _ = self.dir.read(path)
        except (OSError, UnsafePath):
            return False
        if hashlib.sha256(data).hexdigest() != local.hash:
            return False
        v = store.keep_replaced(path, local.hash, data, local.mtime, local.mode, reason,
                                self.peer, self.now_ms())  # fmt: skip
        if v["reason"] != "conflict":
            return False
        log.warning(
            "conflict: %s, written here, lost to a newer write from %s; kept as version %d",
            path, self.peer, v["id"],
        )  # fmt: skip
        return True

    def save(self, final: bool = True, delivered: Iterable[tuple[str, str]] = ()) -> Applied:
        """Put verified files in place, make it durable, save the database and
        the version store; what the last batch did.  Not ``final``: before a
        v2 DONE, which says so to the peer; the end of the session (close)
        saves once more, then recording ``delivered`` (path, hash: what the
        peer received, once the session completed) and collecting the
        store's garbage."""
        done = self.commit() if self.pending else NOTHING
        self.dir.sync_dirs()
        if self.touched or (self.touched is None and self.records != self.loaded):
            self._persist()
        if self.store is not None:
            if final:
                for path, digest in delivered:
                    self.store.sent(path, digest)
            self.store.save(self.now_ms(), collect=final)
        return done

    def _persist(self) -> None:
        """Record the records durably (the journal, or the database whole)."""
        assert self.loaded is not None
        if self.journal:
            self.gen, self.lines = database.save_changes(
                self.ctx.db_path,
                self.loaded,
                self.records,
                self.root,
                self.gen,
                self.lines,
                self.touched,
            )
            if self.touched is not None:
                self.touched = set()
        else:
            self.gen, self.lines = database.save(self.ctx.db_path, self.records, self.root), 0
        self.loaded = dict(self.records)

    def close(
        self,
        delivered: Iterable[tuple[str, str]] = (),
        on_saved: Callable[[], None] | None = None,
    ) -> Applied:
        """Put verified files in place, make it durable, save the database
        (with ``delivered``, see :meth:`save`), then ``on_saved`` (still
        holding the directory), unlock; what the last batch did."""
        if self.loaded is None:
            self.unlock_dir()  # taken before the Hello, perhaps, and never opened
            return NOTHING
        try:
            done = self.save(delivered=delivered)
            if on_saved is not None:
                on_saved()
            return done
        finally:
            self.drop_file()
            self.dir.discard([staged for staged, _ in self.pending])
            self.pending = []
            self.dir.close()
            self.loaded = None
            self.unlock_dir()


def skipped(action: str, exc: Exception) -> None:
    """A file left alone: changed locally meanwhile (the next session settles it:
    info), or not a path to touch (a warning)."""
    level = logging.INFO if isinstance(exc, LocalChanged) else logging.WARNING
    log.log(level, "not %s: %s", action, exc)
