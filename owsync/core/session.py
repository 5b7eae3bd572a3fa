"""The session state machine of protocol v1.  Pure code, no I/O.

Like h11, it takes messages in and gives decisions out; the caller does the
I/O the decisions call for (scanning, writing files, sending) and tells the
machine what it sent.  Both ends of a session run the same machine: the one
that connected and the one that accepted are not told apart.

    machine = Session(accept, max_file_size)
    send(machine.hello(hostname, now))
    for each received message:
        event = machine.receive(message, now)
        PeerHello    -> lock, scan, send(machine.state_message(records))
        PeerState    -> apply event.plan.deletions, send(machine.request(event.plan))
        PeerRequest  -> send a FileContent per path, then EndOfSync
        FileArrived  -> write event.record / event.data into place
        FileRefused  -> log event.reason
        PeerEnd      -> nothing
    finished when machine.complete and everything queued was sent.

Every transition, the peer's messages and this side's steps alike, is in
the one table :data:`TRANSITIONS`; :mod:`owsync.core.session1` puts this
machine behind protocol v2's API (bytes in, the same typed events out).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import NamedTuple

from .plan import Plan, make_plan
from .protocol import (
    PROTOCOL_VERSION,
    EndOfSync,
    FileContent,
    Hello,
    Message,
    ProtocolError,
    RequestFiles,
    SyncState,
)
from .state import Record

MAX_SKEW_S = 60


class SessionAbort(Exception):
    """The session cannot go on (clock skew, version); nothing was changed."""


# Events: what the machine decided, for the caller to carry out.


class PeerHello(NamedTuple):
    """Lock, scan, send state_message()."""

    hostname: str


class PeerState(NamedTuple):
    """Apply plan.deletions, send request(plan)."""

    plan: Plan


class PeerRequest(NamedTuple):
    """Send these files, then EndOfSync."""

    paths: tuple[str, ...]


class FileArrived(NamedTuple):
    """Verified: put it in place."""

    record: Record
    data: bytes


class FileRefused(NamedTuple):
    """Not taken (not requested, too large, not the advertised content): log it."""

    path: str
    reason: str


class PeerEnd(NamedTuple):
    """The peer has sent everything."""


Event = PeerHello | PeerState | PeerRequest | FileArrived | FileRefused | PeerEnd

# Stages of a session, both sides' progress in one:
NEW = "new"  # our Hello not made yet
HELLO = "hello"  # the peer's Hello is due
SCAN = "scan"  # ours is to be made: state_message()
STATE = "state"  # the peer's SyncState is due
PLANNED = "planned"  # ours is to be made: request()
EXCHANGE = "exchange"  # the peer's RequestFiles is due (its FileContent may come)
REQUESTED = "requested"  # its FileContent and EndOfSync are due
ENDED = "ended"  # the peer sent everything (FileContent still answers our request)

# Every transition: (stage, the peer's message type, or the name of our step)
# -> (the handler that checks the message, or None for our steps; the next
# stage).  Whatever is not here is a protocol error (the peer's) or a
# RuntimeError (ours); :func:`_unexpected` words the former.
TRANSITIONS: dict[tuple[str, type | str], tuple[str | None, str]] = {
    (NEW, "hello"): (None, HELLO),
    (HELLO, Hello): ("_on_hello", SCAN),
    (SCAN, "state_message"): (None, STATE),
    (STATE, SyncState): ("_on_state", PLANNED),
    (PLANNED, "request"): (None, EXCHANGE),
    (EXCHANGE, RequestFiles): ("_on_request", REQUESTED),
    (EXCHANGE, FileContent): ("_on_content", EXCHANGE),
    (REQUESTED, FileContent): ("_on_content", REQUESTED),
    (REQUESTED, EndOfSync): ("_on_end", ENDED),
    (ENDED, FileContent): ("_on_content", ENDED),
}
_SECOND: dict[tuple[str, type], str] = {
    (REQUESTED, RequestFiles): "second RequestFiles",
    (ENDED, RequestFiles): "second RequestFiles",
    (EXCHANGE, EndOfSync): "EndOfSync before RequestFiles",
    (ENDED, EndOfSync): "second EndOfSync",
}


def _unexpected(stage: str, kind: type) -> str:
    name = kind.__name__
    if kind is Hello or kind is SyncState:
        return f"unexpected {name}"
    if stage in (NEW, HELLO):
        return f"expected Hello, got {name}"
    if stage in (SCAN, STATE, PLANNED):
        return f"unexpected {name} before the SyncState exchange"
    return _SECOND.get((stage, kind), f"unexpected {name}")


class Session:
    def __init__(self, accept: Callable[[str], bool], max_file_size: int) -> None:
        self.accept = accept
        self.max_file_size = max_file_size
        self.state = NEW
        self.peer_hostname = ""
        self._local: dict[str, Record] = {}
        self._remote: dict[str, Record] = {}
        self._pending: set[str] = set()  # requested, not yet arrived

    def _step(self, what: str) -> None:
        step = TRANSITIONS.get((self.state, what))
        if step is None:
            raise RuntimeError(f"{what}() where the session stands at {self.state!r}")
        self.state = step[1]

    # --- what we send -----------------------------------------------------

    def hello(self, hostname: str, now_s: float) -> Hello:
        self._step("hello")
        return Hello(hostname=hostname, timestamp=float(int(now_s)))

    def state_message(self, records: dict[str, Record]) -> SyncState:
        """Our SyncState, from the records of a scan done after PeerHello."""
        self._step("state_message")
        self._local = records
        return SyncState(tuple(r for r in records.values() if self.accept(r.path)))

    def request(self, plan: Plan) -> RequestFiles:
        self._step("request")
        self._pending = set(plan.requests)
        return RequestFiles(tuple(plan.requests))

    @property
    def complete(self) -> bool:
        return self.state == ENDED

    @property
    def missing(self) -> set[str]:
        """Requested paths that did not arrive."""
        return set(self._pending)

    # --- what we receive --------------------------------------------------

    def receive(self, msg: Message, now_s: float) -> Event:
        kind = type(msg)
        step = TRANSITIONS.get((self.state, kind))
        if step is None:
            raise ProtocolError(_unexpected(self.state, kind))
        handler, then = step
        assert handler is not None  # a row for a message has its handler
        event = getattr(self, handler)(msg, now_s)
        self.state = then
        return event

    # handlers: one per row of TRANSITIONS that takes a message

    def _on_hello(self, msg: Hello, now_s: float) -> PeerHello:
        who = msg.hostname or "peer"
        if msg.version != PROTOCOL_VERSION:
            raise SessionAbort(
                f"{who} speaks protocol version {msg.version}; this node speaks {PROTOCOL_VERSION}"
            )
        skew = now_s - msg.timestamp
        if abs(skew) > MAX_SKEW_S:
            raise SessionAbort(
                f"clock skew of {abs(skew):.0f} s with {who} exceeds {MAX_SKEW_S} s;"
                " synchronize the clocks (NTP)"
            )
        self.peer_hostname = msg.hostname
        return PeerHello(msg.hostname)

    def _on_state(self, msg: SyncState, now_s: float) -> PeerState:
        self._remote = {r.path: r for r in msg.files}
        return PeerState(make_plan(self._local, msg.files, self.accept))

    def _on_request(self, msg: RequestFiles, now_s: float) -> PeerRequest:
        return PeerRequest(tuple(dict.fromkeys(p for p in msg.paths if self.accept(p))))

    def _on_end(self, msg: EndOfSync, now_s: float) -> PeerEnd:
        return PeerEnd()

    def _on_content(self, msg: FileContent, now_s: float) -> FileArrived | FileRefused:
        path = msg.path
        if path not in self._pending:
            return FileRefused(path, "not requested")
        self._pending.discard(path)
        advertised = self._remote[path]
        if len(msg.data) > self.max_file_size:
            return FileRefused(path, f"too large ({len(msg.data)} bytes)")
        digest = hashlib.sha256(msg.data).hexdigest()
        if digest != advertised.hash:
            return FileRefused(path, "content does not match the advertised hash")
        record = Record(path, advertised.hash, advertised.mtime, len(msg.data), msg.mode)
        return FileArrived(record, msg.data)
