"""Live links between our daemons: the mesh, each link's driver, and the
daemon's directory between sessions.

A daemon keeps one link open per peer daemon (:mod:`owsync.core.live` is its
protocol).  What must be exclusive is only the short step that puts received
files in place or notes a local change (:class:`LocalNode`); receiving and
serving files on several links at once never waits for another link.

Who is told what, so that a change costs messages in proportion to the
peers and never echoes: each link remembers the version of every path that
its peer has told us it holds (``theirs``) and that we told it (``told``);
a change is sent to a peer that knows neither.  A change that arrived from
peer S is not relayed to a peer that S is linked to itself (S tells it),
which in a full mesh leaves every change to its writer alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial

from ..core import live as lv
from ..core.plan import remote_wins
from ..core.protocol import ProtocolError
from ..core.protocol2 import PeerError
from ..core.state import Record, Signature
from ..io import database
from ..io.syncdir import LocalChanged, Staged, SyncDir, UnsafePath, signature
from ..io.transport import Channel, PeerClosed, PeerTimeout, Stopped
from ..io.versions import VersionStore
from .context import SessionResult
from .driver import Driver, file_out, later
from .replica import STALE_TEMP_AGE, Applied, Replica, Tally, skipped

log = logging.getLogger("owsync")

DUPLICATE = "a link between these nodes exists already"
BATCH_FILES = 1024  # received files put in place in one step at most
BATCH_BYTES = 8 * 1024 * 1024
BATCH_SECONDS = 0.5  # a batch waits no longer for more files while more are due
BULK_FILES = 8192  # the same while more than BATCH_FILES files are due (and syncfs is there)
BULK_BYTES = 64 * 1024 * 1024
BULK_SECONDS = 2.0
SERVE_DIRS_HELD = 256  # directory descriptors a link keeps open for serving, at most
STEP_LOCK_WAIT = 60.0  # a step waits this long for the directory (a session holding it)
PLACED_MAX = 65536  # paths the links put in place, remembered for the watcher at most

Version = tuple  # (hash, mtime, deleted): what tells two versions of a path apart


def version(r: Record) -> Version:
    return (r.hash, r.mtime, r.deleted)


# --- the directory between sessions -------------------------------------------


class LocalNode:
    """The daemon's directory and its database, changed in short steps.

    Each step takes the directory (the in-process owner and the flock, as a
    session does), works on the records as saved on disk (kept in memory
    while nobody else saved in between), saves, and lets go.  Steps return
    the records they changed; :attr:`on_change` hears of them.
    """

    def __init__(self, ctx_for: Callable[[float], object]) -> None:
        self._ctx_for = ctx_for  # lock timeout -> Context (the daemon's, reloadable)
        self._mutex = threading.Lock()  # the cache below
        self._records: dict[str, Record] = {}
        self._gen: str | None = None
        self._lines = 0
        self._db_sig: tuple | None = None
        self._sent: dict[str, str] = {}  # path -> hash a peer has received: not pending
        self._store: VersionStore | None = None  # the version store, as on disk
        self._store_sig: tuple | None = None
        # what the links put in place here, as they left it (None: removed),
        # so that the watcher's news of those writes costs no rescan
        self._placed: dict[str, Signature | None] = {}
        self._placed_root = ""
        # time.monotonic() when the last full rescan that succeeded began
        # (None: none since a rescan failed or the configuration changed)
        self.full_at: float | None = None
        # whether the records as last saved here hold the tree as it is now,
        # given when the last full rescan began: the group's watcher says so
        # when it is live and everything it saw has been rescanned
        self.current: Callable[[float | None], bool] = lambda full_at: False

    def _ctx(self):
        return self._ctx_for(STEP_LOCK_WAIT)

    def _cached(self, db_path: str) -> tuple[dict[str, Record], str | None, int] | None:
        with self._mutex:
            if self._db_sig is not None and _db_sig(db_path) == self._db_sig:
                return self._records, self._gen, self._lines
            return None

    def _remember(self, db_path: str, r: Replica) -> None:
        with self._mutex:
            self._records, self._gen, self._lines = r.records, r.gen, r.lines
            self._db_sig = _db_sig(db_path)
            self._store = r.store
            self._store_sig = r.store.index_sig() if r.store is not None else None

    def _cached_store(self, ctx) -> VersionStore | None:
        """The version store as last saved here, if nobody saved it since (a
        restore does) and it is still the configured one."""
        with self._mutex:
            store, sig = self._store, self._store_sig
        if store is None or store.dir != ctx.versions_dir or store.index_sig() != sig:
            return None
        return store

    def mark_sent(self, path: str, digest: str) -> None:
        """A peer has ``digest`` for ``path``: a write made here is no longer
        pending (then a peer's newer write replaces it without a conflict)."""
        with self._mutex:
            self._sent[path] = digest

    def _apply_sent(self, r: Replica) -> None:
        with self._mutex:
            sent, self._sent = self._sent, {}
        if r.store is not None:
            for path, digest in sent.items():
                r.store.sent(path, digest)

    def forget(self) -> None:
        """Load from disk at the next step (the configuration changed)."""
        with self._mutex:
            self._records, self._db_sig, self._store = {}, None, None
            self._placed = {}
        self.full_at = None

    def _note_placed(self, root: str, r: Replica, result: SessionResult) -> None:
        removed = set(result.removed)
        with self._mutex:
            if self._placed_root != root or len(self._placed) > PLACED_MAX:
                self._placed, self._placed_root = {}, root
            for path in result.changed:
                rec = r.records.get(path)
                live = path not in removed and rec is not None and not rec.deleted
                self._placed[path] = rec.sig if live and rec is not None else None

    def not_placed(self, paths: set[str]) -> set[str]:
        """Of ``paths`` (the watcher's news), those not exactly as a link
        left them: a path is let go only while its signature is the one the
        link's write gave it (absent, for a removal), so that a local write
        since, even to the same path, is rescanned."""
        with self._mutex:
            if not self._placed:
                return paths
            root, placed = self._placed_root, self._placed
            mine = {p: placed.pop(p) for p in paths if p in placed}
        if not mine:
            return paths
        out = set(paths)
        for path, sig in mine.items():
            try:
                st = os.lstat(os.path.join(root, path))
            except FileNotFoundError:
                now = None
            except OSError:
                continue
            else:
                now = signature(st) if stat.S_ISREG(st.st_mode) else ()
            if now == sig:
                out.discard(path)
        return out

    def loaded(self) -> bool:
        with self._mutex:
            return self._db_sig is not None

    def records(self) -> dict[str, Record]:
        """The records as last seen (a snapshot: never changed in place)."""
        with self._mutex:
            return self._records

    def get(self, path: str) -> Record | None:
        return self.records().get(path)

    def rescan(self, paths: set[str] | None, first: bool = False) -> list[Record]:
        """Note local changes (of ``paths``, or of the whole tree): the changed
        records.  ``first``: the daemon's first scan, before any link stages
        a file (every temp file left is then stale)."""
        began = time.monotonic()
        ctx = self._ctx()
        r = Replica(ctx, journal=True, temps_older_than=0.0 if first else STALE_TEMP_AGE)
        try:
            r.lock_dir(ctx.lock_timeout)
            try:
                known = self.records()  # as last seen: a session may have saved since
                cached = self._cached(ctx.db_path)
                r.use_cached(cached, self._cached_store(ctx))
                r.open(paths)
            except BaseException:
                r.unlock_dir()
                raise
            self._apply_sent(r)
            # reloaded (someone saved since): what changed is anywhere
            touched = None if r.touched is None or cached is None else set(r.touched)
            r.close(on_saved=lambda: self._remember(ctx.db_path, r))
        except BaseException:
            self.full_at = None  # what it was to look at is still to be looked at
            raise
        if paths is None:
            self.full_at = began
        return _changed(known, r.records, touched)

    def up_to_date(self) -> bool:
        """Whether the records are known to hold the tree as it is: the
        watcher is live and has told every change, a full rescan began
        after the watcher was, and nobody else saved the database since."""
        return (
            self.loaded()
            and self.current(self.full_at)
            and self._cached(self._ctx().db_path) is not None
        )

    def refresh(self) -> list[Record]:
        """Before a full reconcile: rescan the whole tree (the changed
        records), unless the records are known to hold it (:meth:`up_to_date`)."""
        return [] if self.up_to_date() else self.rescan(None)

    def apply(
        self,
        files: list[tuple[Staged, Record]],
        deletions: list[Record],
        sd: SyncDir,
        peer: str,
    ):
        """Put a batch of received files in place and apply a peer's deletions,
        each only if it still wins against what is here now.  Returns the
        step's SessionResult, the records it changed as the peer had them,
        and local changes its scan of those paths found (not yet noticed).
        ``peer`` names the peer in kept versions and logs.
        A received file's base keeps its hash alone (a session keeps the
        first contents too): what a later edit here replaces is kept by
        every peer the edit reaches."""
        ctx = self._ctx()
        tally = Tally()
        r = Replica(ctx, sd, journal=True, temps_older_than=STALE_TEMP_AGE, peer=peer)
        try:
            r.lock_dir(ctx.lock_timeout)
            r.use_cached(self._cached(ctx.db_path), self._cached_store(ctx))
            # a local write to those paths that the watcher has not told of counts
            r.open({rec.path for _, rec in files} | {d.path for d in deletions}, dirs=False)
        except BaseException:
            sd.discard([s for s, _ in files])
            r.unlock_dir()
            raise
        loaded = r.loaded or {}
        touched: set[str] = set()
        try:
            self._apply_sent(r)
            for staged, rec in files:
                local = r.records.get(rec.path)
                if remote_wins(rec, local):
                    live = local is not None and not local.deleted
                    r.queue(staged, rec, local.sig if live and local is not None else None)
                else:
                    sd.discard([staged])
            tally.add(r.commit())
            recs = r.records
            dels = [d for d in deletions if d.path in recs and remote_wins(d, recs[d.path])]
            if dels:
                tally.add(r.apply_deletions(dels))
            touched = set(r.touched or ())
        finally:
            tally.add(r.close(on_saved=lambda: self._remember(ctx.db_path, r)))
        done = tally.total()
        result = _step_result(peer, done)
        self._note_placed(ctx.root, r, result)
        arrived = {version(rec) for _, rec in files} | {version(d) for d in deletions}
        changed = _changed(loaded, r.records, touched | {rec.path for _, rec in files})
        removed = set(done.removed)
        theirs = [c for c in changed if version(c) in arrived or c.path in removed]
        ours = [c for c in changed if not (version(c) in arrived or c.path in removed)]
        return result, theirs, ours


def _step_result(peer: str, done: Applied, sent: int = 0) -> SessionResult:
    """A live link's step (files put in place here, or taken by the peer),
    as a SessionResult for the daemon's hooks and history."""
    return SessionResult(
        peer=peer,
        ok=True,
        received=done.received,
        sent=sent,
        deleted=done.deleted,
        changed=done.changed,
        removed=done.removed,
        conflicts=done.conflicts,
        protocol=2,
        live=True,
    )


def _db_sig(db_path: str) -> tuple:
    """What tells that someone else saved the database since: its file and its journal."""
    return (_file_sig(db_path), _file_sig(database.journal_path(db_path)))


def _file_sig(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _changed(
    before: dict[str, Record], after: dict[str, Record], only: set[str] | None = None
) -> list[Record]:
    """The records of ``after`` that are new or other versions than in
    ``before`` (looking at ``only`` these paths, when known)."""
    out = []
    items = after.items() if only is None else ((p, after[p]) for p in only if p in after)
    for p, rec in items:
        old = before.get(p)
        if old is None or not old.same_version(rec):
            out.append(rec)
    return out


# --- the mesh ------------------------------------------------------------------


class LinkStats:
    """A link's figures, for the status (a plain class: dataclasses would load
    inspect, ast and dis, some 2 MiB, into every daemon)."""

    __slots__ = ("since", "last_sent", "last_received", "frames_sent", "frames_received",
                 "updates_sent", "updates_received", "files_sent", "files_received", "deleted",
                 "bytes", "reconciles", "last_reconcile")  # fmt: skip

    def __init__(self) -> None:
        self.since = time.time()
        self.last_sent: float | None = None  # the last update (records) sent
        self.last_received: float | None = None  # the last update received
        self.frames_sent = 0
        self.frames_received = 0
        self.updates_sent = 0  # records sent after the first reconcile
        self.updates_received = 0
        self.files_sent = 0
        self.files_received = 0
        self.deleted = 0
        self.bytes = 0
        self.reconciles = 0
        self.last_reconcile: float | None = None  # the last full reconcile that completed here


class Mesh:
    """This daemon's live links, one per peer daemon (by node id)."""

    def __init__(self, node_id: str, local: LocalNode, on_applied) -> None:
        self.node_id = node_id
        self.local = local
        self.on_applied = on_applied  # (SessionResult, direction) -> None: reloads, history
        self.on_up: Callable[[Link], None] = lambda link: None
        self.port: int | None = None  # where this daemon listens (told in the offer)
        # whether a link's context is the daemon's current one (a reload replaces it)
        self.is_current: Callable[[object], bool] = lambda ctx: True
        self._links: dict[str, Link] = {}
        self._lock = threading.Lock()
        self._seq = 0

    def links(self) -> list[Link]:
        with self._lock:
            return list(self._links.values())

    def known_deletion(self, path: str) -> Record | None:
        """The newest deletion of ``path`` a linked peer has told of (None: none).

        A node that never had a file records no tombstone for it; when an
        older copy then comes from a third node that had not heard of the
        deletion yet, this is what it loses to (else it would stay here until
        the next full reconcile: the third node's copy is not relayed to the
        peer that deleted it, nor is the deletion told here again)."""
        best = None
        for link in self.links():
            told = link.theirs.get(path)
            if told is not None and told.deleted and (best is None or told.mtime > best.mtime):
                best = told
        return best

    def link_for(self, node: str) -> Link | None:
        with self._lock:
            return self._links.get(node)

    def nodes(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._links)

    def register(self, link: Link) -> bool:
        """Take ``link`` on, unless a link to the same node is to be kept
        instead (both ends keep the one whose initiator has the lower id)."""
        if not self.is_current(link.ctx):
            return False  # set up under the configuration a reload just replaced
        with self._lock:
            old = self._links.get(link.peer_node)
            # the same initiator again: it gave its old link up (a path that died
            # silently leaves this end's side open), so the new one replaces it
            if (
                old is not None
                and old.initiator_node != link.initiator_node
                and not lv.keeps_link(link.initiator_node, old.initiator_node)
            ):
                return False
            self._links[link.peer_node] = link
        self.on_up(link)
        if old is not None:
            old.duplicate = True
            old.close(DUPLICATE)
        self._peers_changed()
        return True

    def unregister(self, link: Link) -> None:
        with self._lock:
            if self._links.get(link.peer_node) is not link:
                return
            del self._links[link.peer_node]
        self._peers_changed()

    def _peers_changed(self) -> None:
        nodes = self.nodes()
        for link in self.links():
            link.post(("peers", nodes))

    def broadcast(self, records: list[Record], source: Link | None) -> None:
        if not records:
            return
        src = source.peer_node if source is not None else None
        for link in self.links():
            if link is not source:
                link.post(("changes", records, src))

    def local_change(self, paths: set[str] | None) -> list[Record]:
        changed = self.local.rescan(paths)
        self.broadcast(changed, None)
        return changed

    def refresh(self) -> list[Record]:
        """Bring the records up to date before a full reconcile (a rescan,
        unless they are known to be: :meth:`LocalNode.refresh`)."""
        changed = self.local.refresh()
        self.broadcast(changed, None)
        return changed

    def run_link(self, ch: Channel, ctx, keys, offer: lv.PeerLive, initiator: bool, label: str,
                 rest: bytes) -> Link:  # fmt: skip
        """Drive a link on a connection whose Hellos offered one, until it ends
        (the engine calls this; :attr:`Link.outcome` says how it ended)."""
        accept = Replica(ctx).accepts
        link = Link(self, ch, lv.LiveLink(accept, ctx.max_file_size, keys), ctx, label,
                    offer.node, initiator, offer.port)  # fmt: skip
        link.outcome = link.run(rest)
        return link

    def next_id(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def close_all(self, reason: str) -> None:
        for link in self.links():
            link.close(reason)


class Link(Driver[lv.Event]):
    """One live link's handler on the driver: runs in the thread that made
    the connection (a peer worker, or the listener's thread for an incoming
    one) until the link ends.  Other threads talk to it only through
    :meth:`post`."""

    def __init__(
        self,
        mesh: Mesh,
        ch: Channel,
        machine: lv.LiveLink,
        ctx,
        label: str,
        peer_node: str,
        initiator: bool,
        peer_port: int | None = None,
    ) -> None:
        super().__init__(ch, machine)
        self.mesh = mesh
        self.m = machine
        self.ctx = ctx
        self.label = label
        self.peer_node = peer_node
        self.initiator_node = mesh.node_id if initiator else peer_node
        self.stats = LinkStats()
        self._inbox: deque = deque()
        self._wake_r, self._wake_w = _socketpair()
        self.theirs: dict[str, Record] = {}  # what the peer told us it holds
        self.told: dict[str, Version] = {}  # what we told it we hold
        self.peer_links: frozenset[str] = frozenset()  # the nodes the peer is linked to
        self.peer_roles: dict[str, lv.Role] = {}  # the peer's VRRP roles, as it tells them
        self._want: dict[str, Record] = {}  # to request: the version that made us want it
        self._deletions: list[Record] = []
        self._batch: list[tuple[Staged, Record]] = []
        self._batch_bytes = 0
        self._batch_since = 0.0
        self._sd: SyncDir | None = None  # where the current batch is staged
        self._serving: SyncDir | None = None  # where served files are read (_serving_dir)
        self._incoming: Staged | None = None
        # reconciles whose files are still due here: (id, paths, ours)
        self._acks: list[tuple[int, set[str], bool]] = []
        self._waiters: dict[int, list] = {}  # ours: id -> [acked, replied, event, box]
        self._closing: str | None = None
        self._first = True  # the first reconcile: its records are not "updates"
        self._key_since = time.monotonic()
        self._last_rx = time.monotonic()
        self._last_tx = time.monotonic()
        self.done = threading.Event()
        self.duplicate = False
        self.was_up = False
        self._sent_noted = 0  # files_sent when the history last heard of it
        self._retry: set[str] = set()  # kept out by a local change: look again
        self._retries: dict[str, int] = {}
        self.outcome: str | None = None
        self.peer_reason = ""  # the text of the peer's ERROR, if it sent one
        self._end: str | None = None  # how the loop ended in order (run() returns it)
        self.initiator = initiator  # this side connected
        self.peer_port = peer_port  # where the peer listens, as its offer says

    # --- from other threads ---------------------------------------------------

    def known_as(self, peer: str) -> None:
        """The configured peer this link serves: its logs, history and kept
        versions name it, not the ephemeral port an incoming link came from."""
        self.label = peer

    def post(self, item: tuple) -> None:
        self._inbox.append(item)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def close(self, reason: str) -> None:
        self.post(("close", reason))

    def reconcile(self) -> tuple[threading.Event, list]:
        """Ask for a full reconcile both ways, from the records as they are
        (the caller rescans first: once, whatever the number of links); the
        event is set when it is done (the box then holds True, or an error)."""
        waiter: tuple[threading.Event, list] = (threading.Event(), [])
        self.post(("reconcile", waiter))
        if self.done.is_set():  # the link ended meanwhile: no one reads its mail now
            self._fail_posted()
        return waiter

    def _fail_posted(self) -> None:
        """Answer the reconciles posted and not taken up: the link has ended."""
        kept = []
        while True:
            try:
                item = self._inbox.popleft()
            except IndexError:
                break
            if item[0] == "reconcile":
                item[1][1].append("the link closed before the reconcile completed")
                item[1][0].set()
            else:
                kept.append(item)
        self._inbox.extend(kept)

    # --- the loop ---------------------------------------------------------------

    def run(self, rest: bytes) -> str | None:
        """Drive the link until it ends: None when it closed in order (BYE),
        else why it failed.  :attr:`duplicate` says it gave way to another
        link between the same nodes; :attr:`was_up`, that it got that far."""
        self.ch.set_wake(self._wake_r)
        self.ch.idle_timeout = lv.PING_SECONDS
        try:
            self._send(self.m.start())
            self.loop(rest)
            return self._end
        except (ProtocolError, PeerClosed, PeerTimeout, OSError, database.LockBusy) as exc:
            why = _why(exc)
            if isinstance(exc, PeerError):
                self.peer_reason = exc.reason
            if isinstance(exc, OSError) and not isinstance(exc, PeerClosed):
                log.debug("link with %s: local I/O error", self.label, exc_info=True)
            if not isinstance(exc, PeerError | PeerClosed | PeerTimeout):
                self.say_last(self.m.error, why)
            return why
        except Stopped:
            self.say_last(self.m.bye, "the peer is shutting down")
            return None
        finally:
            if self.was_up:
                self.mesh.unregister(self)
            self._drop_incoming()
            if self._sd is not None:
                self._sd.discard([s for s, _ in self._batch])
                self._sd.close()
                self._sd = None
            self._batch = []
            self._close_serving()
            self.stats.bytes = self.ch.bytes_in + self.ch.bytes_out
            for _, _, event, box in self._waiters.values():
                box.append("the link closed before the reconcile completed")
                event.set()
            self._waiters.clear()
            self._wake_r.close()
            self._wake_w.close()
            self.done.set()
            self._fail_posted()  # (after done: a reconcile posted later fails itself)

    # --- the driver's hooks -------------------------------------------------------

    def settle(self) -> None:
        """After the peer's frames: look again, ask, read the posts, close."""
        if self._retry and self.m.peers != lv.IN_FILE:
            self._look_again()
        if self._want:
            self._request_wanted()
        self._mail()
        if self._closing is not None and self.m.ours != lv.CLOSED:
            self._flush_batch()
            self.out.clear()
            self._send(self.m.bye(self._closing))
        if self.m.ours == lv.CLOSED:
            self.out.clear()  # (BYE or ERROR sent: nothing may follow)

    def sent(self, frames: int) -> None:
        self._last_tx = time.monotonic()
        self.stats.frames_sent = self.m.frames_out

    def finished(self) -> bool:
        self._maybe_commit()
        if self.m.peers == lv.CLOSED or (self.m.ours == lv.CLOSED and self.ch.flushed):
            self._flush_batch()
            self.ch.try_flush()
            self._end = None if self.m.peers == lv.CLOSED or self._closing else "closed"
            return True
        return False

    def wait(self) -> bytes:
        """Wait for the socket or a post; a PING when the link was quiet."""
        wait = BATCH_SECONDS if self._batch else lv.PING_SECONDS
        self.ch.idle_timeout = wait
        try:
            # what finished() queued (a batch put in place ACKs a reconcile)
            # leaves before the wait, not at the next PING
            if self.out:
                self.sent(self.out.drain(self.ch))
            if not self.out:  # all of it on the channel: what the socket takes
                self.ch.try_flush()  # goes now, else the wait wakes at once for it
            data = self.ch.pump_bytes()
        except PeerTimeout:
            data = b""
        now = time.monotonic()
        if data:
            self._last_rx = now
        elif now - self._last_rx > lv.DEAD_SECONDS:
            raise PeerTimeout(f"the peer was silent for {lv.DEAD_SECONDS:.0f} s")
        if now - self._last_tx >= lv.PING_SECONDS and self.m.ours == lv.OPEN:
            self._send(self.m.ping())
        if self.m.ours == lv.OPEN and self.m.needs_rekey(now - self._key_since):
            self._send(self.m.rekey())
            self._key_since = now
        return data

    def _send(self, frame: bytes) -> None:
        """A frame now, ahead of the outbox (AUTH, BYE, PING, REKEY)."""
        self.ch.send_raw(frame)
        self.sent(1)

    # --- what the peer sent ---------------------------------------------------------

    def on_event(self, event: lv.Event) -> None:
        self.stats.frames_received = self.m.frames_in
        match event:
            case lv.FileChunk(data=data):
                if self._incoming is not None:
                    assert self._sd is not None
                    self._sd.append(self._incoming, data)
            case lv.FileStart(record=rec):
                self._begin_file(rec)
            case lv.FileDone(record=rec):
                self._end_file(rec)
            case lv.Records(records=recs):
                self._records(recs)
            case lv.Authenticated():
                self._authenticated()
            case lv.Requested(paths=paths):
                if self._open():  # (what the peer asks after we closed needs no answer)
                    for path in paths:
                        self.out.put_bulk(self._serve(path))
            case lv.FileRefused(path=path, reason=why):
                self._drop_incoming()
                log.warning("not receiving %s from %s: %s", path, self.label, why)
                self._resolved(path)
            case lv.Skipped(path=path, reason=why):
                log.info("%s did not send %s: %s", self.label, path, why)
                self._resolved(path)
            case lv.IndexEnd(ident=ident, reply=reply):
                self._index_end(ident, reply)
            case lv.Acked(ident=ident):
                self._acked(ident)
            case lv.PeersChanged(nodes=nodes):
                self._peers_changed(nodes)
            case lv.RolesChanged(roles=roles):
                self.peer_roles = roles
            case lv.Bye(reason=why):
                if why == DUPLICATE:
                    self.duplicate = True
                else:
                    log.info("link with %s closed by the peer: %s", self.label, why)

    def _authenticated(self) -> None:
        if not self.mesh.register(self):
            self.duplicate = True
            self._closing = DUPLICATE
            return
        self.was_up = True
        if not self.mesh.local.loaded():  # the daemon's first scan failed: this one counts
            self.mesh.broadcast(self.mesh.local.rescan(None), self)
        log.info("link with %s up (live, %s)", self.label,
                 "encrypted" if self.ctx.cipher.encrypted else "PLAIN")  # fmt: skip
        records = self.mesh.local.records()
        self._tell(list(records.values()), initial=True)
        self.out.put(later(self.m.index_end, 0, False))
        self.out.put(later(self.m.peers_frame, self.mesh.nodes()))

    def _records(self, recs: tuple[Record, ...]) -> None:
        now = time.time()
        if not self._first:
            self.stats.updates_received += len(recs)
            self.stats.last_received = now
        local = self.mesh.local.records()
        for rec in recs:
            self.theirs[rec.path] = rec
            if not self.m.accept(rec.path):
                continue
            mine = local.get(rec.path)
            if mine is None and not rec.deleted:
                mine = self.mesh.known_deletion(rec.path)
            if not remote_wins(rec, mine):
                self._want.pop(rec.path, None)
                if mine is not None and rec.hash is not None and mine.hash == rec.hash:
                    # the peer holds our content (any mtime): it has our write
                    self.mesh.local.mark_sent(rec.path, rec.hash)
                continue
            if rec.deleted:
                self._want.pop(rec.path, None)
                self._deletions.append(rec)
                self._batch_since = self._batch_since or time.monotonic()
            elif rec.size > self.ctx.max_file_size:
                log.warning("not receiving %s from %s: too large (%d bytes, max_file_size %d)",
                            rec.path, self.label, rec.size, self.ctx.max_file_size)  # fmt: skip
            else:
                self._want[rec.path] = rec

    def _open(self) -> bool:
        """Whether this side may still send (both AUTHs done, no BYE or ERROR
        sent): what the peer says after we closed needs no answer."""
        return self.m.ours == lv.OPEN and self.m.peers != lv.AUTHING

    def _request_wanted(self) -> None:
        if not self._open():
            return
        fresh = [p for p in self._want if not self.m.is_pending(p)]
        if fresh:
            self.out.put(self.m.request(fresh))

    def _begin_file(self, rec: Record) -> None:
        self._want.pop(rec.path, None)
        local = self.mesh.local.get(rec.path)
        if not remote_wins(rec, local or self.mesh.known_deletion(rec.path)):
            self._incoming = None  # an older version than ours by now: its chunks go nowhere
            return
        if self._sd is None:
            self._sd = SyncDir(self.ctx.root)
        expect = local.sig if local is not None and not local.deleted else None
        try:
            self._incoming = self._sd.open_stage(rec.path, expect)
        except (LocalChanged, UnsafePath) as exc:
            skipped("writing", exc)
            self._incoming = None
            if isinstance(exc, LocalChanged):
                self._retry.add(rec.path)

    def _end_file(self, rec: Record) -> None:
        staged, self._incoming = self._incoming, None
        if staged is not None:
            assert self._sd is not None
            self._sd.finish_stage(staged, rec.mode, rec.mtime)
            self._batch.append((staged, rec))
            self._batch_bytes += staged.size
            self._batch_since = self._batch_since or time.monotonic()
            if self._batch_full():  # (no file on its way between two files)
                self._flush_batch()
        else:
            self._resolved(rec.path)

    def _drop_incoming(self) -> None:
        if self._incoming is not None and self._sd is not None:
            self._sd.discard([self._incoming])
        self._incoming = None

    def _maybe_commit(self) -> None:
        if not (self._batch or self._deletions) or self.m.peers == lv.IN_FILE:
            return  # (a file on its way is staged in the batch's directory)
        wait = BULK_SECONDS if self._bulk() else BATCH_SECONDS
        late = time.monotonic() - self._batch_since >= wait
        if self._batch_full() or late or not self.m.has_pending:
            self._flush_batch()

    def _bulk(self) -> bool:
        """Many more files due (a first reconcile), and staged files hold no
        descriptor (syncfs): larger batches cost fewer steps and saves."""
        return self.m.pending_count >= BATCH_FILES and self._sd is not None and self._sd.by_fs

    def _batch_full(self) -> bool:
        if self._bulk():
            files, size = BULK_FILES, BULK_BYTES
        else:  # without syncfs each staged file holds its descriptor until the batch
            files = BATCH_FILES if self._sd is None else min(BATCH_FILES, self._sd.batch_files)
            size = BATCH_BYTES
        return len(self._batch) >= files or self._batch_bytes >= size

    def _flush_batch(self) -> None:
        """Put the batch in place (one short step); tell the other links."""
        self._drop_incoming()
        batch, dels, sd = self._batch, self._deletions, self._sd
        self._batch, self._deletions, self._batch_bytes, self._batch_since = [], [], 0, 0.0
        self._sd = None  # the next batch gets its own
        if not (batch or dels):
            if sd is not None:
                sd.close()
            return
        began = time.monotonic()
        result, theirs, ours = self.mesh.local.apply(
            batch, dels, sd if sd is not None else SyncDir(self.ctx.root), self.label
        )
        log.debug("from %s: %d file(s) in place, %d deleted, in %.0f ms", self.label,
                  result.received, result.deleted, 1000 * (time.monotonic() - began))  # fmt: skip
        # what a local write kept out (it changed under us): look again, below
        done = set(result.changed)
        self._retry.update(p for p in [r.path for _, r in batch] + [d.path for d in dels]
                           if p not in done)  # fmt: skip
        self.stats.files_received += result.received
        self.stats.deleted += result.deleted
        self._check_acks()
        self.mesh.broadcast(ours, None)  # local writes its scan found
        self._look_again()
        if theirs:
            self.mesh.broadcast(theirs, self)
            self.mesh.on_applied(result, "incoming")

    def _look_again(self) -> None:
        """Paths a local change kept a peer's version out of: note the local
        change (it goes to every peer if it is newer), then ask again for the
        peer's version if it still wins.  A few times at most per path."""
        paths = {p for p in self._retry if self._retries.get(p, 0) < 3}
        self._retry.clear()
        if not paths:
            return
        for p in paths:
            self._retries[p] = self._retries.get(p, 0) + 1
        changed = self.mesh.local.rescan(paths)
        self.mesh.broadcast(changed, None)
        local = self.mesh.local.records()
        for p in paths:
            theirs = self.theirs.get(p)
            if theirs is not None and remote_wins(theirs, local.get(p)):
                if theirs.deleted:
                    self._deletions.append(theirs)
                    self._batch_since = self._batch_since or time.monotonic()
                else:
                    self._want[p] = theirs
        self._request_wanted()

    # --- reconciles ------------------------------------------------------------------

    def _outstanding(self) -> set[str]:
        """Paths still on their way here: wanted, requested, or not yet in place."""
        out = set(self._want) | self.m.pending | {d.path for d in self._deletions}
        out.update(rec.path for _, rec in self._batch)
        return out

    def _index_end(self, ident: int, reply: bool) -> None:
        self._first = False
        self.stats.reconciles += 1
        self.stats.last_reconcile = time.time()
        if reply and self._open():  # the peer's reconcile asks for ours: the whole state
            self.mesh.refresh()
            self._tell(list(self.mesh.local.records().values()), initial=True)
            self.out.put(later(self.m.index_end, ident, False))
        # ours, when it answers a reconcile we started; else the peer's, to ACK
        self._acks.append((ident, self._outstanding(), ident in self._waiters and not reply))
        self._check_acks()

    def _resolved(self, path: str) -> None:
        self._want.pop(path, None)
        self._check_acks()

    def _check_acks(self) -> None:
        if not self._acks:
            return
        outstanding = self._outstanding()
        still = []
        for ident, due, ours in self._acks:
            if due & outstanding:
                still.append((ident, due, ours))
            elif ours:
                self._waiters[ident][1] = True
                self._done_waiter(ident)
            elif self.m.ours == lv.OPEN:
                self.out.put(later(self.m.ack, ident))
        self._acks = still

    def _acked(self, ident: int) -> None:
        """The peer has what our reconcile offered: the files it took from us
        since the last one go into the history."""
        sent = self.stats.files_sent - self._sent_noted
        if sent:
            self._sent_noted = self.stats.files_sent
            self.mesh.on_applied(_step_result(self.label, Applied(), sent), "outgoing")
        if ident in self._waiters:
            self._waiters[ident][0] = True
            self._done_waiter(ident)

    def _done_waiter(self, ident: int) -> None:
        acked, replied, event, box = self._waiters[ident]
        if acked and replied:
            del self._waiters[ident]
            self.stats.last_reconcile = time.time()
            box.append(True)
            event.set()

    def _start_reconcile(self, waiter) -> None:
        event, box = waiter
        if not self._open():
            box.append("the link is not up")
            event.set()
            return
        ident = self.mesh.next_id()
        self._waiters[ident] = [False, False, event, box]
        # the caller rescanned the tree once for all links (Daemon.request_sync)
        self._tell(list(self.mesh.local.records().values()), initial=True)
        self.out.put(later(self.m.index_end, ident, True))

    # --- what other threads posted ------------------------------------------------------

    def _mail(self) -> None:
        while self._inbox:
            item = self._inbox.popleft()
            match item:
                case ("changes", records, source):
                    if self._open():
                        self._changes(records, source)
                case ("peers", nodes):
                    if self._open():
                        self.out.put(later(self.m.peers_frame, nodes - {self.peer_node}))
                case ("reconcile", waiter):
                    self._start_reconcile(waiter)
                case ("vrrp", table):  # this router's VRRP roles, as they are now
                    if self._open():
                        self.out.put(later(self.m.vrrp_frame, table()))
                case ("close", reason):
                    self._closing = self._closing or reason

    def _changes(self, records: list[Record], source: str | None) -> None:
        if source is not None and source in self.peer_links:
            return  # the node it came from tells our peer itself
        self._tell(records, initial=False)

    def _tell(self, records: list[Record], initial: bool) -> None:
        if not self._open():
            return
        fresh = []
        for rec in records:
            v = version(rec)
            known = self.theirs.get(rec.path)
            news = initial or (
                (known is None or version(known) != v) and self.told.get(rec.path) != v
            )
            if news and self.m.accept(rec.path):
                fresh.append(rec)
                self.told[rec.path] = v
        if not fresh:
            return
        if not initial:
            self.stats.updates_sent += len(fresh)
            self.stats.last_sent = time.time()
        self.out.put(self.m.state(fresh))

    def _peers_changed(self, nodes: frozenset[str]) -> None:
        lost = self.peer_links - nodes
        self.peer_links = nodes
        if lost:  # what it may have missed from the nodes it lost: tell it what differs
            local = self.mesh.local.records()
            self._tell([r for p, r in local.items()
                        if p not in self.theirs or version(self.theirs[p]) != version(r)],
                       initial=False)  # fmt: skip

    # --- serving files ----------------------------------------------------------------------

    def _serve(self, path: str) -> Iterator[bytes]:
        """A file the peer asked for, read a chunk at a time as its frames
        leave (the version here when its turn comes), or SKIP."""
        rec = self.mesh.local.get(path)
        m = self.m
        if not m.is_serving(path):
            return  # asked twice, and answered already
        if rec is None or rec.deleted or not m.accept(path):
            yield m.skip(path, "not a file this node has")
            return
        start = partial(m.file_start, rec)
        fresh = self._serving is None
        sd = self._serving_dir()
        got = yield from file_out(m, sd, rec, start, self.ctx.max_file_size)
        if got is not None and not got.started and not fresh:
            # a directory held since was moved or replaced: walk it again
            self._close_serving()
            got = yield from file_out(m, self._serving_dir(), rec, start, self.ctx.max_file_size)
        if got is None:
            self.stats.files_sent += 1
            self.told[path] = version(rec)
            assert rec.hash is not None  # sent, so live
            self.mesh.local.mark_sent(path, rec.hash)
        elif got.started:
            log.info("not sending %s to %s: %s", path, self.label, got.why)
        else:
            yield m.skip(path, got.why)
        if not m.serving_left:  # all asked for is answered: hold no descriptors at rest
            self._close_serving()

    def _serving_dir(self) -> SyncDir:
        """The directory served files are read from: one per link, its
        descriptors kept from file to file (each directory walked once), and
        let go when it holds many (a wide tree) or the link ends."""
        sd = self._serving
        if sd is not None and sd.held > SERVE_DIRS_HELD:
            self._close_serving()
            sd = None
        if sd is None:
            sd = self._serving = SyncDir(self.ctx.root)
        return sd

    def _close_serving(self) -> None:
        if self._serving is not None:
            self._serving.close()
            self._serving = None


def _why(exc: Exception) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, PeerClosed):
        return f"local I/O error: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__


def _socketpair():
    r, w = socket.socketpair()
    r.setblocking(False)
    w.setblocking(False)
    return r, w
