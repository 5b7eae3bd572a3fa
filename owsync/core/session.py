"""The session state machine of protocol v1.  Pure code, no I/O.

Like h11, it takes messages in and gives decisions out; the caller does the
I/O the decisions call for (scanning, writing files, sending) and tells the
machine what it sent.  Both ends of a session run the same machine: the one
that connected and the one that accepted are not told apart.

    machine = Session(accept, max_file_size)
    send(machine.hello(hostname, now))
    for each received message:
        event = machine.receive(message, now)
        PeerHello    -> lock, scan, send(machine.state(records))
        PeerState    -> apply event.plan.deletions, send(machine.request(event.plan))
        PeerRequest  -> send a FileContent per path, then EndOfSync
        FileArrived  -> write event.record / event.data into place
        FileRefused  -> log event.reason
        PeerEnd      -> nothing
    finished when machine.complete and everything queued was sent.
"""

from __future__ import annotations

import hashlib
from collections import namedtuple
from collections.abc import Callable

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
PeerHello = namedtuple("PeerHello", "hostname")  # lock, scan, send state_message()
PeerState = namedtuple("PeerState", "plan")  # apply plan.deletions, send request(plan)
PeerRequest = namedtuple("PeerRequest", "paths")  # send these files, then EndOfSync
FileArrived = namedtuple("FileArrived", "record data")  # verified: put it in place
FileRefused = namedtuple("FileRefused", "path reason")  # log it
PeerEnd = namedtuple("PeerEnd", "")  # the peer has sent everything


Event = PeerHello | PeerState | PeerRequest | FileArrived | FileRefused | PeerEnd

# states
HELLO, SCAN, STATE, EXCHANGE = "hello", "scan", "state", "exchange"


class Session:
    def __init__(self, accept: Callable[[str], bool], max_file_size: int) -> None:
        self.accept = accept
        self.max_file_size = max_file_size
        self.state = HELLO
        self.peer_hostname = ""
        self._local: dict[str, Record] = {}
        self._remote: dict[str, Record] = {}
        self._pending: set[str] = set()  # requested, not yet arrived
        self._sent_hello = False
        self._peer_requested = False
        self._peer_ended = False

    # --- what we send -----------------------------------------------------

    def hello(self, hostname: str, now_s: float) -> Hello:
        self._sent_hello = True
        return Hello(hostname=hostname, timestamp=float(int(now_s)))

    def state_message(self, records: dict[str, Record]) -> SyncState:
        """Our SyncState, from the records of a scan done after PeerHello."""
        if self.state != SCAN:
            raise RuntimeError("state_message() before PeerHello")
        self._local = records
        self.state = STATE
        return SyncState(tuple(r for r in records.values() if self.accept(r.path)))

    def request(self, plan: Plan) -> RequestFiles:
        self._pending = set(plan.requests)
        self.state = EXCHANGE
        return RequestFiles(tuple(plan.requests))

    @property
    def complete(self) -> bool:
        return self.state == EXCHANGE and self._peer_requested and self._peer_ended

    @property
    def missing(self) -> set[str]:
        """Requested paths that did not arrive."""
        return set(self._pending)

    # --- what we receive --------------------------------------------------

    def receive(self, msg: Message, now_s: float) -> Event:
        if isinstance(msg, Hello):
            return self._hello(msg, now_s)
        if self.state == HELLO:
            raise ProtocolError(f"expected Hello, got {type(msg).__name__}")
        if isinstance(msg, SyncState):
            if self.state != STATE:
                raise ProtocolError("unexpected SyncState")
            self._remote = {r.path: r for r in msg.files}
            plan = make_plan(self._local, msg.files, self.accept)
            return PeerState(plan)
        if self.state != EXCHANGE:
            raise ProtocolError(f"unexpected {type(msg).__name__} before the SyncState exchange")
        if isinstance(msg, RequestFiles):
            if self._peer_requested:
                raise ProtocolError("second RequestFiles")
            self._peer_requested = True
            paths = tuple(dict.fromkeys(p for p in msg.paths if self.accept(p)))
            return PeerRequest(paths)
        if isinstance(msg, FileContent):
            return self._content(msg)
        if isinstance(msg, EndOfSync):
            if self._peer_ended:
                raise ProtocolError("second EndOfSync")
            if not self._peer_requested:
                raise ProtocolError("EndOfSync before RequestFiles")
            self._peer_ended = True
            return PeerEnd()
        raise ProtocolError(f"unexpected {type(msg).__name__}")  # pragma: no cover

    def _hello(self, msg: Hello, now_s: float) -> PeerHello:
        if self.state != HELLO or not self._sent_hello:
            raise ProtocolError("unexpected Hello")
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
        self.state = SCAN
        return PeerHello(msg.hostname)

    def _content(self, msg: FileContent) -> FileArrived | FileRefused:
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
