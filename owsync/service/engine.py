"""One sync session over a connected socket: the I/O around the pure core.

:func:`run_session` exchanges the Hellos (v1's, which advertise v2), checks
them with the v1 session machine, then hands the rest to protocol v2 or v1
(:mod:`.exchange`), which drives the session machine on the one loop of
:mod:`.driver` with the I/O of the replica (:mod:`.replica`: the locked
directory and its database).  Both ends of a connection run this same
function.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

from ..core import live, protocol, protocol2
from ..core.crypto import AuthError
from ..core.protocol import ProtocolError, frame_limit
from ..core.session import Session, SessionAbort
from ..core.session1 import Session1
from ..core.session2 import Session2
from ..core.state import Record
from ..io import database
from ..io.syncdir import signature
from ..io.transport import Channel, PeerClosed, PeerTimeout, Stopped
from .context import Context, SessionResult
from .exchange import Exchange, check_time
from .replica import Replica
from .status import incoming_name

log = logging.getLogger("owsync")

INITIATOR_LOCK_WAIT = 8.0  # under the peer's 10 s wait for our Hello
LINGER = 5.0  # seconds a refused v1 peer is given to finish writing and read our end


def refresh(ctx: Context) -> bool:
    """Rescan under the lock and save; True when a version changed (a local change).

    Files owsync wrote itself are already recorded, so they never count.
    """
    replica = Replica(ctx)
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

    ``peer`` is the address it is connected to (an incoming one: see
    _name_incoming).

    ``on_hello`` is called once the peer's Hello has been accepted.  The
    ``initiator`` (the side that connected) waits, after the last message,
    for the peer to hang up, so that when it returns both sides are done.
    """
    result = SessionResult(peer=peer)
    start = time.monotonic()
    ch = Channel(
        sock, ctx.cipher, frame_limit(ctx.max_file_size), ctx.idle_timeout, ctx.should_stop
    )
    replica = Replica(ctx)
    if not initiator:
        _name_incoming(result, replica, ctx, peer, None)
    machine = Session(replica.accepts, ctx.max_file_size)
    try:
        link = _drive(ch, ctx, replica, machine, result, on_hello, initiator, peer)
        if link is not None:
            ch.close()
            return _link_ended(link, result, start)
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
        # the exchange sets it when the peer stopped before its state
        result.busy = result.busy or isinstance(exc, database.LockBusy)
    except Stopped:
        result.error = "stopped"
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        result.error = f"local I/O error{where}: {exc.strerror or exc}"
    except Exception as exc:  # a defect; keep serving other peers
        log.exception("session with %s failed unexpectedly", result.peer)
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
            log.info("sync with %s ok: %s", result.peer, result.summary())
    elif result.busy or result.error == "stopped":  # contention, retried; our own stop
        log.info("sync with %s not now: %s", result.peer, result.error)
    else:
        log.error("sync with %s failed: %s", result.peer, result.error)
    return result


def _name_incoming(result: SessionResult, replica: Replica, ctx: Context, address: str,
                   port: int | None) -> None:  # fmt: skip
    """An incoming peer's port is ephemeral: kept versions name it by its
    address, and a daemon (it has configured peers) names it everywhere as
    the configured peer it is (status.incoming_name; ``port``: where the peer
    says it listens).  ``listen`` keeps the port in its log lines, which tell
    its concurrent sessions apart."""
    replica.peer_label = incoming_name(address, ctx.peers, ctx.port, port)
    if ctx.peers:
        result.peer = replica.peer_label


def _link_ended(link, result: SessionResult, start: float) -> SessionResult:
    """A live link's end, as a SessionResult for the worker and the status."""
    why = link.outcome
    result.node, result.duplicate, result.was_up = link.peer_node, link.duplicate, link.was_up
    result.ok = why is None
    result.error = why or ""
    result.received, result.sent = link.stats.files_received, link.stats.files_sent
    result.deleted, result.bytes = link.stats.deleted, link.stats.bytes
    result.seconds = time.monotonic() - start
    if link.duplicate:
        log.debug("link with %s: another link between these nodes is kept", result.peer)
    elif why is None:
        log.info("link with %s closed", result.peer)
    elif link.was_up:
        log.warning("link with %s lost: %s", result.peer, why)
    else:
        log.error("link with %s failed: %s", result.peer, why)
    return result


def _drive(ch, ctx: Context, replica: Replica, machine: Session, result, on_hello, initiator,
           address: str):  # fmt: skip
    """The Hellos, then the exchange of v1 or v2; a daemon's live link instead
    when both offer one (returned, ended: the session's replica is unused).
    An incoming peer whose offer says where it listens is named anew by it."""
    if initiator and ctx.live is None:
        # The side that connected takes its directory before saying Hello: the
        # peer takes its own only on our Hello, so this wait holds nothing of
        # the peer's.  Every wait-for cycle between nodes then passes through
        # an accepting side's wait, which is short: no two nodes can hold each
        # other up for long (the daemon's incoming sessions wait 2 s at most).
        replica.lock_dir(min(ctx.lock_timeout, INITIATOR_LOCK_WAIT))
    ch.idle_timeout = ctx.hello_timeout
    # a peer trickling a byte now and then must not hold the directory forever
    deadline = time.monotonic() + ctx.session_timeout
    secret = None
    if ctx.live is not None:
        secret = os.urandom(32) if ctx.cipher.encrypted else None
        public = live.x25519_public(secret) if secret is not None else None
        fields = live.advertise(protocol2.new_nonce(), ctx.live.node_id, public, ctx.live.port)
    elif ctx.advertise_v2:
        fields = protocol2.advertise(protocol2.new_nonce())
    else:
        fields = {}
    ours = protocol2.hello_payload(machine.hello(ctx.hostname, ctx.clock()), fields)
    ch.send_payload(ours)
    theirs, rest = _peer_hello(ch, ctx, deadline)
    hello = protocol.decode(theirs)
    if not isinstance(hello, protocol.Hello):
        raise ProtocolError(f"expected Hello, got {type(hello).__name__}")
    machine.receive(hello, ctx.clock())  # the version and the clocks
    peer_fields = protocol2.hello_fields(theirs)
    v2 = protocol2.negotiated(fields, peer_fields)
    result.protocol = 2 if v2 else 1  # shown in the status even when refused below
    offer = live.peer_live(peer_fields) if v2 and ctx.live is not None else None
    result.live = offer is not None
    result.node = offer.node if offer is not None else None
    if not initiator and offer is not None and offer.port is not None:
        _name_incoming(result, replica, ctx, address, offer.port)
    why = protocol2.min_protocol_error(ctx.min_protocol, v2, hello.hostname or "the peer")
    if why is not None:
        # 1.2.0 does not ignore SIGPIPE: hung up on while it writes its state,
        # it dies (a daemon too, at every poll).  Let it see the end instead.
        ch.linger(LINGER)
        raise SessionAbort(why)
    ch.idle_timeout = ctx.idle_timeout
    if on_hello is not None:
        on_hello()
    if offer is not None:
        assert ctx.live is not None  # an offer is read only with a mesh
        keys = live.link_keys(ctx.cipher.key, initiator, ours, theirs, secret)
        return ctx.live.run_link(ch, ctx, keys, offer, initiator, result.peer, rest)
    if initiator and ctx.live is not None:  # a session after all: take the directory now
        replica.lock_dir(min(ctx.lock_timeout, INITIATOR_LOCK_WAIT))
    m: Session1 | Session2
    if v2:
        keys = protocol2.session_keys(ctx.cipher.key, initiator, ours, theirs)
        m = Session2(replica.accepts, ctx.max_file_size, keys)
    else:
        m = Session1(machine, ctx.cipher, frame_limit(ctx.max_file_size))
    Exchange(ch, ctx, replica, m, result, deadline).run(rest)
    return None


def _peer_hello(ch, ctx: Context, deadline: float) -> tuple[bytes, bytes]:
    """The peer's Hello payload (opened) and the bytes that followed it.

    Those belong to protocol v2's reader when both sides speak it, so the
    Hello's frame is cut out here rather than by v1's frame decoder."""
    buf = b""
    while True:
        check_time(ctx, deadline)
        buf += ch.pump_bytes()
        sealed, rest = protocol2.split_hello_frame(buf)
        if sealed is not None:
            return bytes(ch.cipher.open(sealed)), rest


def restore(ctx: Context, version_id: int) -> dict:
    """Put a kept version back as a new local write (it then syncs, and wins).

    What it replaces is kept as a version too.  Raises LookupError for an
    unknown version, ValueError for a path this node no longer syncs.
    """
    replica = Replica(ctx)
    result = SessionResult(peer="")
    replica.open()
    try:
        store = replica.store
        v = store.find(version_id) if store is not None else None
        if store is None or v is None:
            raise LookupError(f"no version {version_id}")
        path = v["path"]
        if not replica.accepts(path):
            raise ValueError(f"{path} is not synced by this node (filters)")
        data = store.read(v["hash"])
        cur = replica.records.get(path)
        live = cur if cur is not None and not cur.deleted else None
        if live is not None and live.hash == v["hash"]:
            return {"restored": path, "id": version_id, "unchanged": True}
        if live is not None:
            replica.keep_local(path, "restored", result)
            store.save(replica.now_ms())
        mtime = replica.now_ms()
        if cur is not None:
            mtime = max(mtime, cur.mtime + 1)
        st = replica.dir.write(path, data, v["mode"], mtime, live.sig if live is not None else None)
        replica.records[path] = Record(path, v["hash"], mtime, len(data), v["mode"], False,
                                       signature(st))  # fmt: skip
        store.set_base(path, v["hash"], None, pending=True)
        replica.local_changes = True
        log.info("restored %s from version %d", path, version_id)
        return {"restored": path, "id": version_id, "unchanged": False}
    finally:
        replica.close(result)
