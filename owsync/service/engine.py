"""One sync session over a connected socket: the I/O around the pure core.

:func:`run_session` exchanges the Hellos (v1's, which advertise v2), checks
them with the v1 session machine, then hands the rest to protocol v2 or v1
(:mod:`.exchange`), which drives the session machine on the one loop of
:mod:`.driver` with the I/O of the replica (:mod:`.replica`: the locked
directory and its database).  Both ends of a connection run this same
function.
"""

from __future__ import annotations

import contextlib
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
from ..io import database
from ..io.transport import Channel, PeerClosed, PeerTimeout, Stopped
from .context import Context, SessionResult
from .exchange import Exchange, check_time
from .replica import NOTHING, Replica
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
    replica.close()
    return replica.local_changes


class GroupUnavailable(Exception):
    """The group of a session cannot be synced with this peer, and that is no
    failure: ``kind`` is "absent" (the peer has no such group, or knows no
    groups) or "v1" (it speaks protocol 1 only, which syncs main only)."""

    def __init__(self, kind: str, why: str) -> None:
        super().__init__(why)
        self.kind = kind


def run_session(
    sock: socket.socket,
    ctx: Context,
    peer: str,
    on_hello: Callable[[], None] | None = None,
    initiator: bool = False,
    log_ok: bool = True,
    groups: Callable[[str], Context | None] | None = None,
) -> SessionResult:
    """Run one session on a connected socket; never raises for session errors.

    ``peer`` is the address it is connected to (an incoming one: see
    _Course.peer).

    ``on_hello`` is called once the peer's Hello has been accepted.  The
    ``initiator`` (the side that connected) waits, after the last message,
    for the peer to hang up, so that when it returns both sides are done.

    The initiator's Hello names ``ctx.group``.  A responder serves the group
    the peer's Hello names: ``ctx``'s own, or the one ``groups`` gives (None:
    this node has no such group, and says so with an ERROR).
    """
    start = time.monotonic()
    ch = Channel(
        sock, ctx.cipher, frame_limit(ctx.max_file_size), ctx.idle_timeout, ctx.should_stop
    )
    if initiator:
        replica = Replica(ctx, peer=peer)
        course = _Course(Session(replica.accepts, ctx.max_file_size), peer)
    else:
        # an incoming peer's port is ephemeral: kept versions name it by its
        # address, or as the configured peer it is (status.incoming_name)
        replica = Replica(ctx, peer=incoming_name(peer, ctx.peers, ctx.port))
        course = _Course(Session(replica.accepts, ctx.max_file_size),
                         replica.peer if ctx.peers else peer)  # fmt: skip
    course.ctx, course.replica = ctx, replica
    ok, error, lock_busy, unavailable = False, "", False, ""
    closed = NOTHING  # what the replica's last batch did
    try:
        course.drive(ch, peer, on_hello, initiator, groups)
        replica = course.replica  # the group's the peer named
        if course.exchange is not None:
            # files and database saved before the peer is let go; the session
            # completed, so what was sent arrived
            closed = replica.close(delivered=course.exchange.delivered)
            # v1: the peer's hang-up is its acknowledgment; v2 had DONE both ways
            if initiator and course.protocol == 1 and not ch.wait_closed(ctx.idle_timeout):
                raise PeerTimeout(
                    f"the peer did not end the session within {ctx.idle_timeout:.0f} s;"
                    " whether it received what was sent is unknown"
                )
            ok = True
    except GroupUnavailable as exc:
        error, unavailable = str(exc), exc.kind
    except protocol2.PeerError as exc:
        error = str(exc)
        if initiator and protocol2.is_no_such_group(exc.reason):
            unavailable = "absent"
    except (
        SessionAbort,
        ProtocolError,
        AuthError,
        PeerClosed,
        PeerTimeout,
        database.LockBusy,
    ) as exc:
        error = str(exc)
        lock_busy = isinstance(exc, database.LockBusy)
    except Stopped:
        error = "stopped"
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        error = f"local I/O error{where}: {exc.strerror or exc}"
    except Exception as exc:  # a defect; keep serving other peers
        log.exception("session with %s failed unexpectedly", course.peer)
        error = f"internal error: {exc!r}"
    finally:
        replica = course.replica
        try:
            closed = closed.then(replica.close())
        except OSError as exc:
            ok = False
            error = error or f"cannot save the database: {exc.strerror}"
        ch.close()
    nbytes, seconds = ch.bytes_in + ch.bytes_out, time.monotonic() - start
    peer = course.peer
    if course.link is not None:
        return _link_ended(course.link, peer, nbytes, seconds, course.group)
    ex = course.exchange
    done = (ex.tally.total() if ex is not None else NOTHING).then(closed)
    result = SessionResult(
        peer=peer,
        ok=ok,
        error=error,
        received=done.received,
        sent=ex.files_sent if ex is not None else 0,
        deleted=done.deleted,
        bytes=nbytes,
        seconds=seconds,
        changed=done.changed,
        removed=done.removed,
        conflicts=done.conflicts,
        # the exchange tells when the peer stopped before its state
        busy=lock_busy or (ex is not None and ex.busy),
        local_changes=replica.local_changes,
        protocol=course.protocol,
        live=course.live,
        node=course.node,
        group=course.group,
        unavailable=unavailable,
    )
    if unavailable:
        log.debug("sync of group %s with %s: %s", course.group, peer, result.error)
    elif result.ok:
        if log_ok:  # `connect` prints its own summary line instead
            log.info("sync with %s ok: %s", peer, result.summary())
    elif log_ok and (result.busy or result.error == "stopped"):
        # contention, which a daemon retries; our own stop.  (`connect`, which
        # passes log_ok=False, retries nothing: there a busy peer is its failure.)
        log.info("sync with %s not now: %s", peer, result.error)
    else:
        log.error("sync with %s failed: %s", peer, result.error)
    return result


def _link_ended(link, peer: str, nbytes: int, seconds: float, group: str) -> SessionResult:
    """A live link's end, as a SessionResult for the worker and the status."""
    why = link.outcome
    absent = link.initiator and protocol2.is_no_such_group(link.peer_reason)
    if absent:
        log.debug("link of group %s with %s: %s", group, peer, why)
    elif link.duplicate:
        log.debug("link with %s: another link between these nodes is kept", peer)
    elif why is None:
        log.info("link with %s closed", peer)
    elif link.was_up:
        log.warning("link with %s lost: %s", peer, why)
    else:
        log.error("link with %s failed: %s", peer, why)
    st = link.stats
    return SessionResult(
        peer=peer,
        ok=why is None,
        error=why or "",
        received=st.files_received,
        sent=st.files_sent,
        deleted=st.deleted,
        bytes=nbytes,
        seconds=seconds,
        protocol=2,
        live=True,
        node=link.peer_node,
        duplicate=link.duplicate,
        was_up=link.was_up,
        group=group,
        unavailable="absent" if absent else "",
    )


class _Course:
    """How one session went, as the engine drives it: what the Hellos said,
    then the exchange of v1 or v2, or a daemon's live link instead (ended:
    the session's replica is unused).  Read once the session is over,
    whether it ended well or not."""

    def __init__(self, machine: Session, peer: str) -> None:
        self.machine = machine  # v1's, for the Hellos (and v1's exchange)
        # what the logs, the result and a live link call the peer: an incoming
        # one in a daemon is named as the configured peer it is, once its
        # offer said where it listens (``listen`` keeps the port in its logs,
        # which tell its concurrent sessions apart)
        self.peer = peer
        self.protocol: int | None = None  # 1 or 2 once the Hellos are exchanged
        self.live = False  # both offered a live link
        self.node: str | None = None  # the peer daemon's id, when it offered one
        self.exchange: Exchange | None = None
        self.link = None  # the live link, once it ended
        # the group's directory: the one the session started with, or (a
        # responder) the one of the group the peer's Hello names
        self.ctx: Context
        self.replica: Replica
        self.group = protocol2.MAIN_GROUP  # the group of the session, once known

    def drive(self, ch, address: str, on_hello, initiator, groups) -> None:
        """The Hellos, then the exchange of v1 or v2, or the live link.
        ``address``: the peer's, as connected.  The initiator sends its Hello
        first; the responder answers it, naming the group it was asked for
        (so that the initiator can tell an owsync that knows no groups, which
        would sync its main directory instead)."""
        machine, ctx, replica = self.machine, self.ctx, self.replica
        self.group = ctx.group
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
        if initiator:
            fields, secret = _our_fields(ctx, ctx.group)
            ours = protocol2.hello_payload(machine.hello(ctx.hostname, ctx.clock()), fields)
            ch.send_payload(ours)
        try:
            theirs, rest = _peer_hello(ch, ctx, deadline)
            hello = protocol.decode(theirs)
            if not isinstance(hello, protocol.Hello):
                raise ProtocolError(f"expected Hello, got {type(hello).__name__}")
            peer_fields = protocol2.hello_fields(theirs)
            # the responder: the group asked for; the initiator: the group answered
            group = protocol2.peer_group(peer_fields)
        except Exception as exc:
            if not initiator and not isinstance(exc, Stopped):
                # no Hello to answer (silence, another key, garbage): ours all the
                # same, main's, so that the peer can tell what went wrong
                with contextlib.suppress(Exception):  # the peer may be gone already
                    _answer(ch, machine, ctx, protocol2.MAIN_GROUP)
            raise
        if not initiator:
            fields, secret, ours = _answer(ch, machine, ctx, group)
        machine.receive(hello, ctx.clock())  # the version and the clocks
        v2 = protocol2.negotiated(fields, peer_fields)
        self.protocol = 2 if v2 else 1  # shown in the status even when refused below
        offer = live.peer_live(peer_fields) if v2 and ctx.live is not None else None
        self.live = offer is not None
        self.node = offer.node if offer is not None else None
        if not initiator and offer is not None and offer.port is not None and ctx.peers:
            self.peer = incoming_name(address, ctx.peers, ctx.port, offer.port)
        why = protocol2.min_protocol_error(ctx.min_protocol, v2, hello.hostname or "the peer")
        if why is not None:
            # 1.2.0 does not ignore SIGPIPE: hung up on while it writes its state,
            # it dies (a daemon too, at every poll).  Let it see the end instead.
            ch.linger(LINGER)
            raise SessionAbort(why)
        who = hello.hostname or "the peer"
        if initiator and ctx.group != protocol2.MAIN_GROUP:
            if not v2:  # owsync 1.2.0 (it too must see the end, not a reset)
                ch.linger(LINGER)
                raise GroupUnavailable("v1", f"{who} speaks protocol 1 only, which syncs main only")
            if group != ctx.group:
                raise GroupUnavailable("absent", f"{who} runs an owsync without sync groups")
        elif not initiator and group != ctx.group:
            self.group = group
            target = groups(group) if groups is not None and v2 else None
            if target is None:
                text = protocol2.no_such_group(group)
                if v2:  # said under the keys the initiator expects, before any state
                    ch.send_raw(_refusal(ctx, offer, ours, theirs, secret, text))
                ch.linger(LINGER)
                raise GroupUnavailable("absent", text)
            ctx = self.ctx = target
            replica = self.replica = Replica(target, peer=replica.peer)
        ch.idle_timeout = ctx.idle_timeout
        if on_hello is not None:
            on_hello()
        if offer is not None:
            assert ctx.live is not None  # an offer is read only with a mesh
            keys = live.link_keys(ctx.cipher.key, initiator, ours, theirs, secret)
            self.link = ctx.live.run_link(ch, ctx, keys, offer, initiator, self.peer, rest)
            return
        if initiator and ctx.live is not None:  # a session after all: take the directory now
            replica.lock_dir(min(ctx.lock_timeout, INITIATOR_LOCK_WAIT))
        m: Session1 | Session2
        if v2:
            keys = protocol2.session_keys(ctx.cipher.key, initiator, ours, theirs)
            m = Session2(replica.accepts, ctx.max_file_size, keys)
        else:
            m = Session1(machine, ctx.cipher, frame_limit(ctx.max_file_size))
        self.exchange = Exchange(ch, ctx, replica, m, self.peer, deadline)
        self.exchange.run(rest)


def _answer(ch, machine, ctx: Context, group: str) -> tuple[dict, bytes | None, bytes]:
    """The responder's Hello, naming ``group``, on its way before anything
    else can fail (a clock check, a refusal): (fields, X25519 secret, payload)."""
    fields, secret = _our_fields(ctx, group)
    ours = protocol2.hello_payload(machine.hello(ctx.hostname, ctx.clock()), fields)
    ch.send_payload(ours)
    ch.try_flush()
    return fields, secret, ours


def _our_fields(ctx: Context, group: str) -> tuple[dict, bytes | None]:
    """Our Hello's fields for ``group`` (v2's advertisement, a daemon's live
    offer; none when v2 is off here), and the live offer's X25519 secret."""
    if ctx.live is not None:
        secret = os.urandom(32) if ctx.cipher.encrypted else None
        public = live.x25519_public(secret) if secret is not None else None
        nonce = protocol2.new_nonce()
        return live.advertise(nonce, ctx.live.node_id, public, ctx.live.port, group), secret
    if ctx.advertise_v2:
        return protocol2.advertise(protocol2.new_nonce(), group), None
    return {}, None


def _refusal(ctx: Context, offer, ours: bytes, theirs: bytes, secret, text: str) -> bytes:
    """The ERROR frame that refuses a group this node has not: a live link's
    when both Hellos offered one, else a v2 session's (the responder's keys)."""
    if offer is not None:
        keys = live.link_keys(ctx.cipher.key, False, ours, theirs, secret)
        return live.LiveLink(lambda _: False, ctx.max_file_size, keys).error(text)
    keys = protocol2.session_keys(ctx.cipher.key, False, ours, theirs)
    return Session2(lambda _: False, ctx.max_file_size, keys).error(text)


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
    replica = Replica(ctx, peer="")
    replica.open()
    try:
        store = replica.store
        v = store.find(version_id) if store is not None else None
        if store is None or v is None:
            raise LookupError(f"no version {version_id}")
        path = v["path"]
        if not replica.accepts(path):
            raise ValueError(f"{path} is not synced by this node (filters)")
        if not replica.write_local(path, store.read(v["hash"]), v["hash"], v["mode"]):
            return {"restored": path, "id": version_id, "unchanged": True}
        log.info("restored %s from version %d", path, version_id)
        return {"restored": path, "id": version_id, "unchanged": False}
    finally:
        replica.close()
