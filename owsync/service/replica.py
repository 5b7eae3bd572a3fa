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
from collections.abc import Callable

from ..core.paths import is_hidden, path_problem
from ..core.state import Record, deleted_by_peer, pending_deletion, received
from ..io import database, scanner
from ..io.syncdir import LocalChanged, Staged, SyncDir, UnsafePath, is_temp_name, signature
from ..io.versions import VersionStore
from .context import Context, SessionResult

log = logging.getLogger("owsync")

BATCH_BYTES = 8 * 1024 * 1024
# Files new to this node wait in larger batches where one syncfs(2) makes a
# batch durable: each syncfs is a journal commit and a flush, and a new file
# replaces nothing, so keeping it back costs only its temp name and memory.
NEW_BATCH_FILES = 16384
NEW_BATCH_BYTES = 64 * 1024 * 1024
STALE_TEMP_AGE = 300.0  # seconds a temp file is left unwritten before it counts as stale


class Replica:
    """The sync directory and its database, held under the lock for one session."""

    def __init__(
        self,
        ctx: Context,
        syncdir: SyncDir | None = None,
        journal: bool = False,
        temps_older_than: float | None = None,
    ) -> None:
        """``journal``: record changes in the database's journal (the daemon's
        short steps) rather than writing it whole (a session, once)."""
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
        self.local_changes = False
        self.store: VersionStore | None = None
        self.sent: list[tuple[str, str]] = []  # (path, hash) served to the peer
        self.completed = False  # the session ran to its end: what was sent arrived
        self.bases_taken = 0  # received contents stored as bases this session
        self.peer_label: str | None = None  # who replaced a kept version (None: result.peer)
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
                track_local_changes(self, loaded, res.records, now_ms, res.changed)
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
        return lambda path: not path.startswith(prefix) and flt(path)

    def stage(self, record: Record, data: bytes, result: SessionResult) -> None:
        """Write a received file to a temp file; it goes in place with its batch."""
        if self.begin_file(record):
            self.add_chunk(data)
            self.end_file(record, result)

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

    def end_file(self, record: Record, result: SessionResult) -> None:
        """The file is whole and verified: it goes in place with its batch."""
        staged, base = self.incoming, self.incoming_base
        self.incoming = self.incoming_base = None
        if staged is None:
            return
        self.dir.finish_stage(staged, record.mode, record.mtime)
        if base is not None:
            # a base is taken only with a store (_wants_base); a received file is live
            assert self.store is not None and record.hash is not None
            self.store.put(record.hash, b"".join(base))  # its base, once in place
            self.bases_taken += 1
        self._add_pending(staged, record)
        if self._batch_full():
            self.commit(result)

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

    def commit(self, result: SessionResult) -> None:
        """Keep what the batch replaces, make the staged files durable, rename
        them into place; record them."""
        batch, self.pending, self.pending_bytes = self.pending, [], 0
        self.pending_replacing = self.pending_replacing_bytes = 0
        if not batch:
            return
        # (a batch of new files replaces nothing: no save of the store before it)
        if self.store is not None and any(s.expect is not None for s, _ in batch):
            for _, record in batch:
                self.keep_local(record.path, "replaced", result)
            self.store.save(self.now_ms(), collect=False)  # durable before anything is replaced
        outcomes = self.dir.commit([staged for staged, _ in batch])
        for (_, record), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):
                skipped("writing", outcome)
            else:
                self.records[record.path] = received(record, signature(outcome))
                self._touch(record.path)
                result.received += 1
                result.changed.append(record.path)
                if self.store is not None:
                    assert record.hash is not None  # a received file is live
                    self.store.set_base(record.path, record.hash, None, pending=False)

    def now_ms(self) -> int:
        return int(self.ctx.clock() * 1000)

    def keep_local(self, path: str, reason: str, result: SessionResult) -> None:
        """Keep the local file ``path`` in the store before a peer replaces it.

        A write made here that no peer has received yet is a conflict: it
        lost last-writer-wins.  A file changed since the scan is left alone
        (the write is skipped too).
        """
        store = self.store
        assert store is not None  # every caller keeps versions only with a store
        local = self.records.get(path)
        if local is None or local.deleted:
            return
        assert local.hash is not None  # live
        try:
            data, _ = self.dir.read(path)
        except (OSError, UnsafePath):
            return
        if hashlib.sha256(data).hexdigest() != local.hash:
            return
        if store.pending(path, local.hash):
            reason = "conflict"
        by = self.peer_label if self.peer_label is not None else result.peer
        v = store.keep(path, local.hash, data, local.mtime, local.mode, reason, by,
                            self.now_ms())  # fmt: skip
        if reason == "conflict":
            result.conflicts.append(path)
            log.warning(
                "conflict: %s, written here, lost to a newer write from %s; kept as version %d",
                path, result.peer, v["id"],
            )  # fmt: skip

    def save(self, result: SessionResult, final: bool = True) -> None:
        """Put verified files in place, make it durable, save the database and
        the version store.  Not ``final``: before a v2 DONE, which says so to
        the peer; the end of the session (close) saves once more, then
        recording what the peer received and collecting the store's garbage."""
        if self.pending:
            self.commit(result)
        self.dir.sync_dirs()
        if self.touched or (self.touched is None and self.records != self.loaded):
            self._persist()
        if self.store is not None:
            if final and self.completed:
                for path, digest in self.sent:
                    self.store.sent(path, digest)
            self.store.save(self.now_ms(), collect=final)

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

    def close(self, result: SessionResult, on_saved: Callable[[], None] | None = None) -> None:
        """Put verified files in place, make it durable, save the database,
        then ``on_saved`` (still holding the directory), unlock."""
        if self.loaded is None:
            self.unlock_dir()  # taken before the Hello, perhaps, and never opened
            return
        try:
            self.save(result)
            if on_saved is not None:
                on_saved()
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


def apply_deletions(replica: Replica, deletions: list[Record], result: SessionResult) -> None:
    if not deletions:
        return
    if replica.store is not None:
        for remote in deletions:
            replica.keep_local(remote.path, "deleted", result)
        replica.store.save(replica.now_ms(), collect=False)  # durable before anything is removed
    # Write-ahead: the peer's tombstones are saved before any file is removed,
    # each marked with the signature of its file (pending_deletion).  Killed
    # after an unlink, the node would otherwise find the file gone, take that
    # for a deletion of its own stamped at its restart, and delete a
    # re-creation made meanwhile; killed before, its next scan completes it.
    before = {remote.path: replica.records[remote.path] for remote in deletions}
    for remote in deletions:
        replica.records[remote.path] = pending_deletion(before[remote.path], remote)
        replica._touch(remote.path)
    replica._persist()
    for remote in deletions:
        local = before[remote.path]
        try:
            replica.dir.delete(remote.path, local.sig)
        except (LocalChanged, UnsafePath) as exc:
            skipped("deleting", exc)
            replica.records[remote.path] = local  # not deleted; saved at the end
            continue
        replica.records[remote.path] = deleted_by_peer(local, remote)  # done: saved at the end
        if replica.store is not None:
            replica.store.forget_base(remote.path)
        result.deleted += 1
        result.changed.append(remote.path)
        result.removed.append(remote.path)


def track_local_changes(
    replica: Replica,
    loaded: dict[str, Record],
    records: dict[str, Record],
    now_ms: int,
    only: set[str] | None = None,
) -> None:
    """Keep what local edits and deletions replaced (from the bases), and take
    the new contents as bases: writes made here, pending until a peer has them.
    ``only``: the paths a partial scan changed (None: every record)."""
    store = replica.store
    assert store is not None
    items = records.items() if only is None else ((p, records[p]) for p in only if p in records)
    for path, rec in items:
        old = loaded.get(path)
        if old is not None and old.deleted:
            old = None  # only a live record had a base
        if rec.deleted:
            if old is not None:
                base = store.bases.get(path)
                if base is not None and base[0] == old.hash:
                    store.keep_base_version(path, old.mtime, old.mode, "deleted", now_ms)
                store.forget_base(path)
            continue
        if old is not None and old.hash == rec.hash:
            if store.fresh and path not in store.bases:
                _take_base(replica, rec, pending=False)
            continue
        if old is not None and path in store.bases and store.bases[path][0] == old.hash:
            store.keep_base_version(path, old.mtime, old.mode, "edited", now_ms)
        _take_base(replica, rec, pending=True)


def _take_base(replica: Replica, rec: Record, pending: bool) -> None:
    store = replica.store
    assert store is not None and rec.hash is not None  # from track_local_changes: live
    if rec.hash in store.sizes:
        store.set_base(rec.path, rec.hash, None, pending)
        return
    if not store.room_for(rec.size):
        store.set_base(rec.path, rec.hash, None, pending)  # its hash alone
        return
    try:
        data, _ = replica.dir.read(rec.path)
    except (OSError, UnsafePath):
        return
    if hashlib.sha256(data).hexdigest() == rec.hash:  # unchanged since the scan
        store.set_base(rec.path, rec.hash, data, pending)
