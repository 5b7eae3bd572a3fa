"""One sync session over a connected socket: the I/O around the pure core.

:func:`run_session` drives a :class:`~owsync.session.Session` machine with
real I/O: it takes the directory lock once the peer's Hello is accepted,
scans, applies the plan, serves and writes files, and saves the database.
Both ends of a connection run this same function.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial

from ..core import protocol, protocol2
from ..core import session2 as s2
from ..core.crypto import AuthError
from ..core.filters import Filter
from ..core.paths import is_hidden, path_problem
from ..core.protocol import EndOfSync, FileContent, Message, ProtocolError, frame_limit
from ..core.protocol2 import CHUNK_SIZE
from ..core.session import (
    SCAN,
    STATE,
    FileArrived,
    FileRefused,
    PeerRequest,
    PeerState,
    Session,
    SessionAbort,
)
from ..core.session2 import Session2
from ..core.state import Record, deleted_by_peer, received
from ..io import database, scanner
from ..io.syncdir import LocalChanged, Staged, SyncDir, UnsafePath, is_temp_name, signature
from ..io.transport import Channel, PeerClosed, PeerTimeout, Stopped
from ..io.versions import Limits, VersionStore

log = logging.getLogger("owsync")

DEFAULT_MAX_FILE_SIZE = 16 * 1024 * 1024
INITIATOR_LOCK_WAIT = 8.0  # under the peer's 10 s wait for our Hello
BATCH_BYTES = 8 * 1024 * 1024
LINGER = 5.0  # seconds a refused v1 peer is given to finish writing and read our end
OUT_BUFFER = 256 * 1024  # bytes queued on the socket before more is read from disk
# A received file's content is kept as its base (so that a later edit here
# keeps what it replaced) for the first files of a session only: a bulk sync
# does not write everything twice.  Past them, the base keeps the hash alone;
# the content an edit replaces is then still kept by every peer it reaches.
BASES_PER_SESSION = 64


class Context:
    """Everything a session needs; built from a Config (see owsync.config)."""

    def __init__(
        self,
        root: str,
        db_path: str,
        filter: Filter,
        cipher,
        hostname: str | None = None,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        clock: Callable[[], float] = time.time,
        idle_timeout: float = 60.0,  # silence tolerated once a session is under way
        hello_timeout: float = 10.0,  # silence tolerated before the peer's Hello
        session_timeout: float = 1800.0,  # a whole session, however lively
        lock_timeout: float = 30.0,
        should_stop: Callable[[], bool] = lambda: False,
        owner: threading.Lock | None = None,  # in-process owner of the directory
        versions_dir: str | None = None,  # the version store; None: none kept
        versions: Limits | None = None,
        min_protocol: int = 1,  # 2: refuse peers that speak v1 only (owsync 1.2.0)
        advertise_v2: bool | None = None,  # None: unless OWSYNC_MAX_PROTOCOL=1 (tests, bench)
    ) -> None:
        self.root = root
        self.db_path = db_path
        self.filter = filter
        self.cipher = cipher
        self.hostname = hostname or socket.gethostname()
        self.max_file_size = max_file_size
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.hello_timeout = hello_timeout
        self.session_timeout = session_timeout
        self.lock_timeout = lock_timeout
        self.should_stop = should_stop
        self.owner = owner
        self.versions_dir = versions_dir if versions is None or versions.keep > 0 else None
        self.versions = versions or Limits()
        self.own_prefix = self._inside(versions_dir) if self.versions_dir else None
        if min_protocol not in (1, 2):
            raise ValueError("min_protocol is 1 or 2")
        self.min_protocol = min_protocol
        if advertise_v2 is None:
            advertise_v2 = os.environ.get("OWSYNC_MAX_PROTOCOL", "2") != "1"
        self.advertise_v2 = advertise_v2

    def _inside(self, path: str) -> str | None:
        """``path`` relative to the root with a trailing slash, when inside it."""
        rel = os.path.relpath(os.path.realpath(path), os.path.realpath(self.root))
        if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
            return "" if rel == "." else None
        return rel.replace(os.sep, "/") + "/"

    def open_store(self, tidy: bool = True) -> VersionStore | None:
        if not self.versions_dir:
            return None
        return VersionStore.open(self.versions_dir, self.versions, tidy)

    def own_relpaths(self) -> frozenset[str]:
        """owsync's own files that lie inside the sync directory, relative to it."""
        root = os.path.realpath(self.root)
        out = set()
        for f in database.own_files(self.db_path):
            full = os.path.join(
                os.path.realpath(os.path.dirname(os.path.abspath(f))), os.path.basename(f)
            )
            rel = os.path.relpath(full, root)
            if not rel.startswith(".." + os.sep) and rel != "..":
                out.add(rel.replace(os.sep, "/"))
        return frozenset(out)


class SessionResult:
    """What one session did, for logs, the status and the summary line."""

    def __init__(self, peer: str, error: str = "") -> None:
        self.peer = peer
        self.ok = False
        self.error = error
        self.received = 0
        self.sent = 0
        self.deleted = 0
        self.bytes = 0
        self.seconds = 0.0
        self.changed: list[str] = []  # paths written or removed here
        self.removed: list[str] = []  # those of them removed (deletions from the peer)
        self.conflicts: list[str] = []  # writes made here that lost to the peer's
        # failed only because a directory was busy (ours, or the peer's: it hung up
        # between its Hello and its SyncState): worth a quick retry, not a backoff
        self.busy = False
        self.local_changes = False  # its scan found local writes not yet recorded
        self.protocol: int | None = None  # 1 or 2 once the Hellos are exchanged

    def as_dict(self) -> dict:
        return {
            "peer": self.peer,
            "ok": self.ok,
            "error": self.error,
            "received": self.received,
            "sent": self.sent,
            "deleted": self.deleted,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "conflicts": list(self.conflicts),
            "protocol": self.protocol,
        }

    def summary(self) -> str:
        text = (
            f"received {self.received}, sent {self.sent}, deleted {self.deleted},"
            f" bytes {self.bytes}, seconds {self.seconds:.2f}"
        )
        return text if self.protocol is None else f"{text}, protocol {self.protocol}"


class _Replica:
    """The sync directory and its database, held under the lock for one session."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.own = ctx.own_relpaths()
        self.dir = SyncDir(ctx.root)
        self.root = os.path.realpath(ctx.root)  # recorded in the database it goes with
        self.lock = database.DirLock(ctx.db_path)
        self.loaded: dict[str, Record] | None = None
        self.records: dict[str, Record] = {}
        self.pending: list[tuple[Staged, Record]] = []  # received, not yet in place
        self.pending_bytes = 0
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

    def open(self) -> dict[str, Record]:
        """Take the directory (if not yet), load the database, scan."""
        self.lock_dir(self.ctx.lock_timeout)
        try:
            loaded = database.load(self.ctx.db_path, root=self.root)
            res = scanner.scan(self.ctx.root, loaded, self._scan_filter(), self.own, self.now_ms)
            now_ms = self.now_ms()
            if res.stale_temps:
                self.dir.remove_stale_temps(res.stale_temps)
            self.store = self.ctx.open_store()
            if self.store is not None:
                _track_local_changes(self, loaded, res.records, now_ms)
        except BaseException:
            self.dir.close()
            self.unlock_dir()
            raise
        self.loaded, self.records = loaded, res.records
        # local writes found by this scan: whoever scans first (a session, a
        # rescan) must let the daemon know, or the change reaches one peer only
        self.local_changes = loaded.keys() != res.records.keys() or any(
            not r.same_version(loaded[p]) for p, r in res.records.items()
        )
        return self.records

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
        return store is not None and self.bases_taken < BASES_PER_SESSION and store.room_for(size)

    def begin_file(self, record: Record) -> bool:
        """Open a temp file for a file on its way; False when it is to be skipped."""
        local = self.records.get(record.path)
        expect = local.sig if local is not None and not local.deleted else None
        try:
            self.incoming = self.dir.open_stage(record.path, expect)
        except (LocalChanged, UnsafePath) as exc:
            _skipped("writing", exc)
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
            self.store.put(record.hash, b"".join(base))  # its base, once in place
            self.bases_taken += 1
        self.pending.append((staged, record))
        self.pending_bytes += staged.size
        if len(self.pending) >= self.dir.batch_files or self.pending_bytes >= BATCH_BYTES:
            self.commit(result)

    def commit(self, result: SessionResult) -> None:
        """Keep what the batch replaces, make the staged files durable, rename
        them into place; record them."""
        batch, self.pending, self.pending_bytes = self.pending, [], 0
        if self.store is not None:
            for _, record in batch:
                self.keep_local(record.path, "replaced", result)
            self.store.save(self.now_ms(), collect=False)  # durable before anything is replaced
        outcomes = self.dir.commit([staged for staged, _ in batch])
        for (_, record), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):
                _skipped("writing", outcome)
            else:
                self.records[record.path] = received(record, signature(outcome))
                result.received += 1
                result.changed.append(record.path)
                if self.store is not None:
                    self.store.set_base(record.path, record.hash, None, pending=False)

    def now_ms(self) -> int:
        return int(self.ctx.clock() * 1000)

    def keep_local(self, path: str, reason: str, result: SessionResult) -> None:
        """Keep the local file ``path`` in the store before a peer replaces it.

        A write made here that no peer has received yet is a conflict: it
        lost last-writer-wins.  A file changed since the scan is left alone
        (the write is skipped too).
        """
        local = self.records.get(path)
        if local is None or local.deleted:
            return
        try:
            data, _ = self.dir.read(path)
        except (OSError, UnsafePath):
            return
        if hashlib.sha256(data).hexdigest() != local.hash:
            return
        if self.store.pending(path, local.hash):
            reason = "conflict"
        by = self.peer_label if self.peer_label is not None else result.peer
        v = self.store.keep(path, local.hash, data, local.mtime, local.mode, reason, by,
                            self.now_ms())  # fmt: skip
        if reason == "conflict":
            result.conflicts.append(path)
            log.warning(
                "conflict: %s, written here, lost to a newer write from %s; kept as version %d",
                path, result.peer, v["id"],
            )  # fmt: skip

    def save(self, result: SessionResult) -> None:
        """Put verified files in place, make it durable, save the database
        (what a v2 DONE then tells the peer)."""
        if self.pending:
            self.commit(result)
        self.dir.sync_dirs()
        if self.records != self.loaded:
            database.save(self.ctx.db_path, self.records, self.root)
            self.loaded = dict(self.records)
        if self.store is not None:
            self.store.save(self.now_ms())

    def close(self, result: SessionResult) -> None:
        """Put verified files in place, make it durable, save the database, unlock."""
        if self.loaded is None:
            self.unlock_dir()  # taken before the Hello, perhaps, and never opened
            return
        try:
            self.save(result)
            if self.store is not None and self.completed and self.sent:
                for path, digest in self.sent:
                    self.store.sent(path, digest)
                self.store.save(self.now_ms())
        finally:
            self.drop_file()
            self.dir.discard([staged for staged, _ in self.pending])
            self.pending = []
            self.dir.close()
            self.loaded = None
            self.unlock_dir()


def refresh(ctx: Context) -> bool:
    """Rescan under the lock and save; True when a version changed (a local change).

    Files owsync wrote itself are already recorded, so they never count.
    """
    replica = _Replica(ctx)
    replica.open()
    replica.close(SessionResult(peer="local"))
    return replica.local_changes


def run_session(
    sock: socket.socket,
    ctx: Context,
    peer: str,
    on_hello: Callable[[], None] | None = None,
    initiator: bool = False,
    log_ok: bool = True,
) -> SessionResult:
    """Run one session on a connected socket; never raises for session errors.

    ``on_hello`` is called once the peer's Hello has been accepted.  The
    ``initiator`` (the side that connected) waits, after the last message,
    for the peer to hang up, so that when it returns both sides are done.
    """
    result = SessionResult(peer=peer)
    start = time.monotonic()
    ch = Channel(
        sock, ctx.cipher, frame_limit(ctx.max_file_size), ctx.idle_timeout, ctx.should_stop
    )
    replica = _Replica(ctx)
    if not initiator:  # an incoming peer's port is ephemeral: its address names it
        from .status import host_of

        replica.peer_label = host_of(peer)
    machine = Session(replica.accepts, ctx.max_file_size)
    try:
        _drive(ch, ctx, replica, machine, result, on_hello, initiator)
        replica.completed = True
        replica.close(result)  # files and database saved before the peer is let go
        # v1: the peer's hang-up is its acknowledgment; v2 had DONE both ways
        if initiator and result.protocol == 1 and not ch.wait_closed(ctx.idle_timeout):
            raise PeerTimeout(
                f"the peer did not end the session within {ctx.idle_timeout:.0f} s;"
                " whether it received what was sent is unknown"
            )
        result.ok = True
    except (
        SessionAbort,
        ProtocolError,
        AuthError,
        PeerClosed,
        PeerTimeout,
        database.LockBusy,
    ) as exc:
        result.error = str(exc)
        result.busy = isinstance(exc, database.LockBusy) or (
            isinstance(exc, PeerClosed) and machine.state in (SCAN, STATE)
        )
    except Stopped:
        result.error = "stopped"
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        result.error = f"local I/O error{where}: {exc.strerror or exc}"
    except Exception as exc:  # a defect; keep serving other peers
        log.exception("session with %s failed unexpectedly", peer)
        result.error = f"internal error: {exc!r}"
    finally:
        try:
            replica.close(result)
        except OSError as exc:
            result.ok = False
            result.error = result.error or f"cannot save the database: {exc.strerror}"
        ch.close()
        result.bytes = ch.bytes_in + ch.bytes_out
        result.seconds = time.monotonic() - start
        result.local_changes = replica.local_changes
    if result.ok:
        if log_ok:  # `connect` prints its own summary line instead
            log.info("sync with %s ok: %s", peer, result.summary())
    else:
        log.error("sync with %s failed: %s", peer, result.error)
    return result


def _drive(ch, ctx: Context, replica: _Replica, machine: Session, result, on_hello, initiator):
    if initiator:
        # The side that connected takes its directory before saying Hello: the
        # peer takes its own only on our Hello, so this wait holds nothing of
        # the peer's.  Every wait-for cycle between nodes then passes through
        # an accepting side's wait, which is short: no two nodes can hold each
        # other up for long (the daemon's incoming sessions wait 2 s at most).
        replica.lock_dir(min(ctx.lock_timeout, INITIATOR_LOCK_WAIT))
    ch.idle_timeout = ctx.hello_timeout
    # a peer trickling a byte now and then must not hold the directory forever
    deadline = time.monotonic() + ctx.session_timeout
    fields = protocol2.advertise(protocol2.new_nonce()) if ctx.advertise_v2 else {}
    ours = protocol2.hello_payload(machine.hello(ctx.hostname, ctx.clock()), fields)
    ch.send_payload(ours)
    theirs, rest = _peer_hello(ch, ctx, deadline)
    hello = protocol.decode(theirs)
    if not isinstance(hello, protocol.Hello):
        raise ProtocolError(f"expected Hello, got {type(hello).__name__}")
    machine.receive(hello, ctx.clock())  # the version and the clocks
    v2 = protocol2.negotiated(fields, protocol2.hello_fields(theirs))
    result.protocol = 2 if v2 else 1  # shown in the status even when refused below
    why = protocol2.min_protocol_error(ctx.min_protocol, v2, hello.hostname or "the peer")
    if why is not None:
        # 1.2.0 does not ignore SIGPIPE: hung up on while it writes its state,
        # it dies (a daemon too, at every poll).  Let it see the end instead.
        ch.linger(LINGER)
        raise SessionAbort(why)
    ch.idle_timeout = ctx.idle_timeout
    if on_hello is not None:
        on_hello()
    if v2:
        keys = protocol2.session_keys(ctx.cipher.key, initiator, ours, theirs)
        _drive_v2(ch, ctx, replica, Session2(replica.accepts, ctx.max_file_size, keys),
                  result, rest, deadline)  # fmt: skip
    else:
        ch.after_hello()
        state = machine.state_message(replica.open())
        try:
            ch.send(state)
        except ProtocolError as exc:
            raise SessionAbort(
                f"this node's state ({len(state.files)} files) is more than protocol v1 carries"
                f" ({exc}); the peer speaks v1 only (owsync 1.2.0?)"
            ) from None
        _drive_v1(ch, ctx, replica, machine, result, ch.decode_v1(rest), deadline)


def _peer_hello(ch, ctx: Context, deadline: float) -> tuple[bytes, bytes]:
    """The peer's Hello payload (opened) and the bytes that followed it.

    Those belong to protocol v2's reader when both sides speak it, so the
    Hello's frame is cut out here rather than by v1's frame decoder."""
    buf = b""
    while True:
        _check_time(ctx, deadline)
        buf += ch.pump_bytes()
        sealed, rest = protocol2.split_hello_frame(buf)
        if sealed is not None:
            return bytes(ch.cipher.open(sealed)), rest


def _check_time(ctx: Context, deadline: float) -> None:
    if ctx.should_stop():
        raise Stopped()
    if time.monotonic() > deadline:
        raise PeerTimeout(f"session still unfinished after {ctx.session_timeout:.0f} s")


def _drive_v1(ch, ctx, replica: _Replica, machine: Session, result, first, deadline) -> None:
    outgoing: Iterator[Message] | None = None
    received = first
    while True:
        for msg in received:
            event = machine.receive(msg, ctx.clock())
            if isinstance(event, PeerState):
                _apply_deletions(replica, event.plan.deletions, result)
                ch.send(machine.request(event.plan))
            elif isinstance(event, PeerRequest):
                outgoing = _serve(replica, ch, event.paths)
            elif isinstance(event, FileArrived):
                replica.stage(event.record, event.data, result)
            elif isinstance(event, FileRefused):
                log.warning("refused %r from %s: %s", event.path, result.peer, event.reason)
        while outgoing is not None and ch.out_bytes < OUT_BUFFER:
            msg = next(outgoing, None)
            if msg is None:
                outgoing = None
                break
            ch.send(msg)
            if isinstance(msg, FileContent):
                result.sent += 1
        if machine.complete and outgoing is None and ch.flushed:
            break
        _check_time(ctx, deadline)
        received = ch.pump()
    if machine.missing:
        log.info("%d requested file(s) did not arrive from %s", len(machine.missing), result.peer)


def _drive_v2(ch, ctx, replica: _Replica, m: Session2, result, data: bytes, deadline) -> None:
    """Protocol v2 after the Hellos: typed frames, files streamed from and to disk.

    What this side sends is a queue of frame iterators, taken in order and
    only as fast as the socket drains (so memory stays at a few chunks); a
    step that may start only once the previous one is all sent is queued as
    a function that makes its iterator.
    """
    try:
        _exchange_v2(ch, ctx, replica, m, result, data, deadline)
    except (PeerClosed, s2.PeerError):
        raise
    except Exception as exc:
        # Tell the peer why, if it can still hear: its log then says more
        # than "connection closed".  Best effort, never waited for.
        try:
            ch.send_raw(m.error(_why(exc)))
            ch.try_flush()
        except (RuntimeError, ValueError, ProtocolError, PeerClosed):
            pass
        raise
    if m.missing:
        log.info("%d requested file(s) did not arrive from %s", len(m.missing), result.peer)


def _why(exc: Exception) -> str:
    if isinstance(exc, Stopped):
        return "the peer is shutting down"
    if isinstance(exc, OSError):
        return f"local I/O error on the peer: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__


def _exchange_v2(ch, ctx, replica: _Replica, m: Session2, result, data: bytes, deadline) -> None:
    out: deque = deque()
    ch.send_raw(m.start())
    while True:
        if data:
            m.receive_data(data)
        while (event := m.next_event()) is not None:
            kind = type(event)
            if kind is s2.FileChunk:
                replica.add_chunk(event.data)
            elif kind is s2.FileStart:
                replica.begin_file(event.record)
            elif kind is s2.FileDone:
                replica.end_file(event.record, result)
            elif kind is s2.PeerAuth:
                out.append(m.state(replica.open()))
            elif kind is s2.PeerState:
                for rec in event.too_large:
                    log.warning("not receiving %s from %s: too large (%d bytes,"
                                " max_file_size %d)", rec.path, result.peer, rec.size,
                                ctx.max_file_size)  # fmt: skip
                _apply_deletions(replica, event.plan.deletions, result)
                out.append(partial(m.request, event.plan))
            elif kind is s2.PeerRequest:
                out.append(partial(_serve_v2, replica, m, event.paths, result))
            elif kind is s2.FileRefused:
                replica.drop_file()
                log.warning("not receiving %s from %s: %s", event.path, result.peer, event.reason)
        while out and ch.out_bytes < OUT_BUFFER:
            head = out[0]
            if callable(head):
                head = out[0] = head()
            frame = next(head, None)
            if frame is None:
                out.popleft()
            else:
                ch.send_raw(frame)
        if m.can_close and not out:  # both ENDs: in place and saved, then say so
            replica.save(result)
            ch.send_raw(m.done())
        if m.complete and ch.flushed:
            break
        _check_time(ctx, deadline)
        try:
            data = ch.pump_bytes()
        except PeerClosed:
            m.connection_closed()  # ProtocolError, unless the peer's DONE came
            if m.complete and ch.flushed:
                break
            raise


def _skipped(action: str, exc: Exception) -> None:
    """A file left alone: changed locally meanwhile (the next session settles it:
    info), or not a path to touch (a warning)."""
    level = logging.INFO if isinstance(exc, LocalChanged) else logging.WARNING
    log.log(level, "not %s: %s", action, exc)


def _apply_deletions(replica: _Replica, deletions: list[Record], result: SessionResult) -> None:
    if replica.store is not None and deletions:
        for remote in deletions:
            replica.keep_local(remote.path, "deleted", result)
        replica.store.save(replica.now_ms(), collect=False)  # durable before anything is removed
    for remote in deletions:
        local = replica.records[remote.path]
        try:
            replica.dir.delete(remote.path, local.sig)
        except (LocalChanged, UnsafePath) as exc:
            _skipped("deleting", exc)
            continue
        replica.records[remote.path] = deleted_by_peer(local, remote)
        if replica.store is not None:
            replica.store.forget_base(remote.path)
        result.deleted += 1
        result.changed.append(remote.path)
        result.removed.append(remote.path)
    if result.deleted:
        # Recorded at once, not at the end of the session: killed in between, the
        # node would find the files gone, take that for deletions of its own,
        # stamped at its restart, and delete a re-creation made meanwhile.
        database.save(replica.ctx.db_path, replica.records, replica.root)


def _serve(replica: _Replica, ch: Channel, paths: tuple[str, ...]) -> Iterator[Message]:
    limit = replica.ctx.max_file_size
    for path in paths:
        rec = replica.records.get(path)
        if rec is None or rec.deleted:
            continue
        if rec.size > limit:
            log.warning(
                "not sending %s: too large (%d bytes, max_file_size %d)", path, rec.size, limit
            )
            continue
        try:
            data, st = replica.dir.read(path)
        except (OSError, UnsafePath) as exc:
            log.warning("not sending %s: %s", path, getattr(exc, "strerror", None) or exc)
            continue
        if len(data) > limit or 2 * len(data) + 4096 > ch.frame_limit:
            log.warning("not sending %s: too large (%d bytes)", path, len(data))
            continue
        replica.sent.append((path, rec.hash))
        yield FileContent(path, st.st_mode & 0o777, data)
    yield EndOfSync()


def _serve_v2(replica: _Replica, m: Session2, paths, result: SessionResult) -> Iterator[bytes]:
    """The frames of the files the peer asked for, read from disk a chunk at a
    time, then END.  A file that changed since the scan is given up with a
    FILE_END that says so (the next session sends it)."""
    limit = replica.ctx.max_file_size
    for path in paths:
        rec = replica.records[path]
        if rec.size > limit:
            log.warning(
                "not sending %s: too large (%d bytes, max_file_size %d)", path, rec.size, limit
            )
            continue
        try:
            f, st = replica.dir.open_read(path)
        except (OSError, UnsafePath) as exc:
            log.warning("not sending %s: %s", path, getattr(exc, "strerror", None) or exc)
            continue
        with f:
            yield m.file_start(path, st.st_mode)
            why = None
            while left := m.outgoing_left:
                try:
                    chunk = f.read(min(CHUNK_SIZE, left))
                except OSError as exc:
                    why = f"cannot be read: {exc.strerror}"
                    break
                if not chunk:
                    why = "shorter than advertised (changed while being sent)"
                    break
                yield m.file_chunk(chunk)
            if why is None:
                frame, why = m.file_end()
                yield frame
            else:
                yield m.file_abort(why)
        if why is None:
            replica.sent.append((path, rec.hash))
            result.sent += 1
        else:
            log.info("not sending %s: %s", path, why)
    yield m.end()


def _track_local_changes(
    replica: _Replica, loaded: dict[str, Record], records: dict[str, Record], now_ms: int
) -> None:
    """Keep what local edits and deletions replaced (from the bases), and take
    the new contents as bases: writes made here, pending until a peer has them."""
    store = replica.store
    assert store is not None
    for path, rec in records.items():
        old = loaded.get(path)
        live_before = old is not None and not old.deleted
        if rec.deleted:
            if live_before:
                base = store.bases.get(path)
                if base is not None and base[0] == old.hash:
                    store.keep_base_version(path, old.mtime, old.mode, "deleted", now_ms)
                store.forget_base(path)
            continue
        if live_before and old.hash == rec.hash:
            if store.fresh and path not in store.bases:
                _take_base(replica, rec, pending=False)
            continue
        if live_before and path in store.bases and store.bases[path][0] == old.hash:
            store.keep_base_version(path, old.mtime, old.mode, "edited", now_ms)
        _take_base(replica, rec, pending=True)


def _take_base(replica: _Replica, rec: Record, pending: bool) -> None:
    store = replica.store
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


def restore(ctx: Context, version_id: int) -> dict:
    """Put a kept version back as a new local write (it then syncs, and wins).

    What it replaces is kept as a version too.  Raises LookupError for an
    unknown version, ValueError for a path this node no longer syncs.
    """
    replica = _Replica(ctx)
    result = SessionResult(peer="")
    replica.open()
    try:
        store = replica.store
        v = store.find(version_id) if store is not None else None
        if v is None:
            raise LookupError(f"no version {version_id}")
        path = v["path"]
        if not replica.accepts(path):
            raise ValueError(f"{path} is not synced by this node (filters)")
        data = store.read(v["hash"])
        cur = replica.records.get(path)
        live = cur is not None and not cur.deleted
        if live and cur.hash == v["hash"]:
            return {"restored": path, "id": version_id, "unchanged": True}
        if live:
            replica.keep_local(path, "restored", result)
            store.save(replica.now_ms())
        mtime = replica.now_ms()
        if cur is not None:
            mtime = max(mtime, cur.mtime + 1)
        st = replica.dir.write(path, data, v["mode"], mtime, cur.sig if live else None)
        replica.records[path] = Record(path, v["hash"], mtime, len(data), v["mode"], False,
                                       signature(st))  # fmt: skip
        store.set_base(path, v["hash"], None, pending=True)
        replica.local_changes = True
        log.info("restored %s from version %d", path, version_id)
        return {"restored": path, "id": version_id, "unchanged": False}
    finally:
        replica.close(result)
