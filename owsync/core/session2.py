"""The session state machine of protocol v2.  Pure code, no I/O.

Like :mod:`owsync.session` (v1), it takes bytes in and gives events out, h11
style; the caller does the I/O the events call for and sends the frames the
machine makes, in the order it makes them.  Both ends run the same machine;
only the keys tell the initiator (the side that connected) from the other.

    keys = protocol2.session_keys(psk, initiator, our_hello, peer_hello)
    machine = Session2(accept, max_file_size, keys)
    send(machine.start())                                   # AUTH
    on bytes received: machine.receive_data(data), then
    while (event := machine.next_event()) is not None:      # handle each at once
        PeerAuth     -> lock, scan, send every frame of machine.state(records)
        PeerState    -> apply event.plan.deletions, send every frame of
                        machine.request(event.plan) (event.too_large: log;
                        event.withheld, ours the peer lacks but cannot
                        take: log)
        PeerRequest  -> per path: send machine.file_start(path, mode), then
                        machine.file_chunk(data) per at most CHUNK_SIZE bytes
                        (machine.outgoing_left say how many remain), then the
                        frame of machine.file_end() (or machine.file_abort());
                        at last send machine.end()
        FileStart    -> open a temp file for event.record
        FileChunk    -> write event.data to it
        FileDone     -> verified (size and SHA-256): put it in place
        FileRefused  -> the sender gave it up: discard the temp file, log it
        PeerEnd      -> nothing yet
        PeerDone     -> nothing: the peer has everything we sent, saved
    once our END is made and the peer's has come (machine.can_close): put
    what arrived in place and save it, then send machine.done()
    on end of file: machine.connection_closed() (ProtocolError unless the
    peer's DONE arrived); done when machine.complete and all was sent.

Each event must be handled before next_event() is called again: the peer's
STATE is planned against the records given to state() on PeerAuth.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from collections.abc import Callable, Generator, Iterator
from typing import Generic, NamedTuple, TypeVar

from .plan import Plan, make_plan, remote_wins
from .protocol import ProtocolError
from .protocol2 import (
    AUTH,
    CHUNK,
    CHUNK_SIZE,
    DONE,
    END,
    ERROR,
    FILE,
    FILE_END,
    MAX_RECORDS,
    NAMES,
    REQUEST,
    REQUEST_END,
    STATE,
    STATE_END,
    EndCounts,
    FileHeader,
    Frame,
    FrameReader,
    FrameWriter,
    Keys,
    PeerError,
    decode_end,
    decode_error,
    decode_file_end,
    decode_file_header,
    decode_request,
    decode_state,
    encode_end,
    encode_error,
    encode_file_end,
    encode_file_header,
    request_bodies,
    state_bodies,
)
from .state import Record

# Events: what the machine decided, for the caller to carry out.


class PeerAuth(NamedTuple):
    """Lock, scan, send state(records)."""


class PeerState(NamedTuple):
    """Apply the deletions, send request(plan); ``too_large``: not requested;
    ``withheld``: our files newer than the peer's, over max_file_size, so the
    peer will not ask for them (1.2.0's sender says "too large" too)."""

    plan: Plan
    too_large: list[Record]
    withheld: tuple[Record, ...] = ()


class PeerRequest(NamedTuple):
    """Send these files, then end()."""

    paths: tuple[str, ...]


class FileStart(NamedTuple):
    """Open a temp file."""

    record: Record


class FileChunk(NamedTuple):
    """Append to it."""

    path: str
    data: bytes


class FileDone(NamedTuple):
    """Size and hash verified: put it in place."""

    record: Record


class FileRefused(NamedTuple):
    """The sender gave it up: discard."""

    path: str
    reason: str


class PeerEnd(NamedTuple):
    """The peer sent everything, and said so."""

    counts: EndCounts


class PeerDone(NamedTuple):
    """The peer has all we sent, in place and saved."""


Event = (
    PeerAuth
    | PeerState
    | PeerRequest
    | FileStart
    | FileChunk
    | FileDone
    | FileRefused
    | PeerEnd
    | PeerDone
)

# Where a stream stands (each direction has its own): the next frames it may carry.
AUTHING, STATING, REQUESTING, FILING, ENDED, CLOSED = range(6)
IN_FILE = 6  # FILING with a file on its way (the peer's stream only)

# Every transition of the peer's stream: (where it stands, frame type) -> the
# handler, which checks the frame's content and moves the stage it ends
# (STATE_END to REQUESTING, REQUEST_END to FILING, END to ENDED, DONE and
# ERROR to CLOSED).  Whatever is not here is a protocol error.
TRANSITIONS: dict[tuple[int, int], str] = {
    (AUTHING, AUTH): "_on_auth",
    (STATING, STATE): "_state",
    (STATING, STATE_END): "_state",
    (REQUESTING, REQUEST): "_on_request",
    (REQUESTING, REQUEST_END): "_on_request",
    (FILING, FILE): "_on_file",
    (FILING, END): "_on_end",
    (IN_FILE, CHUNK): "_on_chunk",
    (IN_FILE, FILE_END): "_on_file_end",
    (ENDED, DONE): "_on_done",
    **{
        (where, ERROR): "_on_error"
        for where in (AUTHING, STATING, REQUESTING, FILING, IN_FILE, ENDED)
    },  # fmt: skip
}
# What a peer's ERROR before its state says when it only could not sync just
# then (its directory busy with another session, or shutting down): worth a
# quick retry.  Any other reason (a frame it could not accept, say) is a failure.
RETRY_REASONS = ("another session ", "the peer is shutting down")

_STAGE = ["AUTH", "STATE", "REQUEST", "FILE or END", "DONE", "nothing"]


class FileInFlight:
    """A file on its way, either direction: its record, bytes so far, running hash."""

    __slots__ = ("record", "done", "sha")

    def __init__(self, record: Record) -> None:
        self.record = record
        self.done = 0
        self.sha = hashlib.sha256()

    def add(self, data: bytes) -> None:
        self.done += len(data)
        self.sha.update(data)

    def whole(self) -> bool:
        return self.done == self.record.size and self.sha.hexdigest() == self.record.hash

    def check_received(self) -> None:
        """At the peer's FILE_END: a ProtocolError unless all its bytes came and
        they match its SHA-256."""
        if self.done != self.record.size:
            raise ProtocolError(
                f"FILE_END for {self.record.path!r} after {self.done} of {self.record.size} bytes"
            )
        if not self.whole():
            raise ProtocolError(f"{self.record.path!r}: the content does not match its SHA-256")


E = TypeVar("E")


class FrameInbox(Generic[E]):
    """What v2 and the live link receive alike: frames checked and opened as
    their bytes come, queued until handled, and the machine's failure, the
    first ProtocolError, raised again by every later call."""

    _r: FrameReader
    _frames: deque[Frame]
    _failed: str | None

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; frames are checked and opened as they complete."""
        self._check()
        try:
            self._frames.extend(self._r.feed(data))
        except ProtocolError as exc:
            self._failed = str(exc)
            raise

    def _next_handled(self, handle: Callable[[Frame], E | None]) -> E | None:
        """The queued frames through ``handle`` in order, until one makes an
        event (None: none did); a ProtocolError from ``handle`` fails the machine."""
        while self._frames:
            frame = self._frames.popleft()
            try:
                event = handle(frame)
            except ProtocolError as exc:
                self._failed = str(exc)
                raise
            if event is not None:
                return event
        return None

    def _check(self) -> None:
        if self._failed is not None:
            raise ProtocolError(self._failed)


class FileSender:
    """Sending one file at a time, for v2 and the live link alike: each chunk
    checked against the size its FILE advertised, its end against its
    SHA-256.  The protocol makes the frames (:meth:`_frame`) and may count
    what went (:meth:`_chunk_sent`)."""

    _out: FileInFlight | None

    def _frame(self, kind: int, body: bytes = b"") -> bytes:
        raise NotImplementedError

    def _chunk_sent(self, n: int) -> None:
        """``n`` bytes of a file went out (v2 counts them for its END)."""

    def carries(self, size: int) -> bool:
        """Whether a file of ``size`` bytes can go at all (v2 streams any size)."""
        return True

    @property
    def outgoing_left(self) -> int:
        """Bytes of the file being sent still due (read at most this much)."""
        if self._out is None:
            raise RuntimeError("no file is being sent")
        return self._out.record.size - self._out.done

    def file_chunk(self, data: bytes) -> bytes:
        if self._out is None:
            raise RuntimeError("file_chunk() outside a file")
        if not 0 < len(data) <= min(CHUNK_SIZE, self.outgoing_left):
            raise ValueError("a chunk has 1..CHUNK_SIZE bytes, none past the advertised size")
        self._out.add(data)
        self._chunk_sent(len(data))
        return self._frame(CHUNK, data)

    def file_end(self) -> tuple[bytes, str | None]:
        """FILE_END, and None; or, when what was read is not what was advertised
        (the file changed meanwhile), a FILE_END giving it up, and why."""
        if self._out is None:
            raise RuntimeError("file_end() outside a file")
        if self._out.whole():
            self._out = None
            return self._frame(FILE_END, encode_file_end()), None
        why = "changed while being sent"
        return self.file_abort(why), why

    def finish_file(self) -> Generator[bytes, None, str | None]:
        """What :meth:`file_end` makes, as the pieces to send in turn (a
        protocol may send a large frame in pieces it never joins); returns
        its ``why``."""
        frame, why = self.file_end()
        yield frame
        return why

    def file_abort(self, reason: str) -> bytes:
        """FILE_END giving the file up (it changed, it could not be read)."""
        if self._out is None:
            raise RuntimeError("file_abort() outside a file")
        self._out = None
        return self._frame(FILE_END, encode_file_end(reason))


class Session2(FrameInbox[Event], FileSender):
    def __init__(
        self,
        accept: Callable[[str], bool],
        max_file_size: int,
        keys: Keys,
        max_records: int = MAX_RECORDS,
    ) -> None:
        self.accept = accept
        self.max_file_size = max_file_size
        self.max_records = max_records
        self._t = keys.transcript
        self._w = FrameWriter(keys.send)
        self._r = FrameReader(keys.recv)
        self._frames: deque[Frame] = deque()
        self._failed: str | None = None
        self.ours = self.peers = AUTHING  # each stream's stage
        self.gave_up_at: int | None = None  # the peer's stage when its ERROR came
        self.gave_up_because = ""  # and the reason it gave
        self._started = False
        self._requested = False
        # ours
        self._local: dict[str, Record] | None = None
        self._advertised: dict[str, Record] = {}  # live records we sent
        self._withheld: dict[str, Record] = {}  # of those, over max_file_size and not older
        self._to_serve: set[str] = set()  # the peer asked, not yet sent
        self._out: FileInFlight | None = None
        self._sent_files = self._sent_bytes = 0
        # the peer's
        self._seen: set[str] = set()  # paths of its state
        self._plan = Plan()
        self._remote: dict[str, Record] = {}  # its records we plan to request
        self._pending: set[str] = set()  # requested, not yet started
        self._asked: dict[str, None] = {}  # its request, in order
        self._in: FileInFlight | None = None
        self._got_frames = self._got_files = self._got_bytes = 0

    # --- what we send -----------------------------------------------------

    def start(self) -> bytes:
        """AUTH: the first frame, sent right after the Hellos."""
        if self._started:
            raise RuntimeError("start() twice")
        self._started = True
        self.ours = STATING
        return self._frame(AUTH, self._t)

    def state(self, records: dict[str, Record]) -> Iterator[bytes]:
        """STATE frames then STATE_END, from the records of a scan done on PeerAuth."""
        if self.peers < STATING or self._local is not None:
            raise RuntimeError("state() before PeerAuth, or twice")
        self._local = records
        mine = [r for r in records.values() if self.accept(r.path)]
        self._advertised = {r.path: r for r in mine if not r.deleted}
        self._withheld = {p: r for p, r in self._advertised.items() if r.size > self.max_file_size}
        return self._stream(STATE, state_bodies(mine), STATE_END, REQUESTING)

    def request(self, plan: Plan) -> Iterator[bytes]:
        """REQUEST frames then REQUEST_END, for the plan of PeerState: made as
        they are taken, once our state's frames have all been taken."""
        if self.peers < REQUESTING or self._requested:
            raise RuntimeError("request() before PeerState, or twice")
        if any(p not in self._remote for p in plan.requests):
            raise RuntimeError("request() for a path the peer's plan did not offer")
        self._pending = set(plan.requests)
        self._requested = True
        return self._stream(REQUEST, request_bodies(plan.requests), REQUEST_END, FILING, REQUESTING)

    def _stream(
        self, kind: int, bodies, last: int, then: int, after: int | None = None
    ) -> Iterator[bytes]:
        if after is not None and self.ours != after:
            raise RuntimeError(f"{NAMES[kind]} frames before our previous stream's")
        for body in bodies:
            yield self._frame(kind, body)
        self.ours = then
        yield self._frame(last)

    def file_start(self, path: str, mode: int) -> bytes:
        """FILE for a path of PeerRequest, as advertised; ``mode`` from the file now."""
        if self.ours != FILING or self.peers < FILING or self._out is not None:
            raise RuntimeError("file_start() out of order")
        if path not in self._to_serve:
            raise RuntimeError(f"file_start() for {path!r}: not requested, or sent already")
        self._to_serve.discard(path)
        rec = self._advertised[path]
        self._out = FileInFlight(rec)
        self._sent_files += 1
        return self._frame(FILE, encode_file_header(
            FileHeader(path, mode & 0o777, rec.size, rec.hash, rec.mtime)))  # fmt: skip

    def end(self) -> bytes:
        """END, with what this side sent: the last frame of our stream."""
        if self.ours != FILING or self.peers < FILING or self._out is not None:
            raise RuntimeError("end() before PeerRequest, or inside a file")
        self.ours = ENDED
        self._to_serve.clear()
        counts = EndCounts(self._w.counter, self._sent_files, self._sent_bytes)
        return self._frame(END, encode_end(counts))

    @property
    def can_close(self) -> bool:
        """Our END made and the peer's verified, DONE not yet made: time to
        put what arrived in place, save it, and send done()."""
        return self.ours == ENDED and self.peers >= ENDED and self._failed is None

    def done(self) -> bytes:
        """DONE: everything the peer sent is in place and saved here.

        Without it the peer cannot tell a session we completed from one cut
        after its last frame left; it completes a session only on our DONE."""
        if not self.can_close:
            raise RuntimeError("done() before both ENDs")
        self.ours = CLOSED
        return self._frame(DONE)

    def error(self, text: str) -> bytes:
        """ERROR: this side gives the session up; nothing may follow."""
        self.ours = CLOSED
        return self._frame(ERROR, encode_error(text))

    def _frame(self, kind: int, body: bytes = b"") -> bytes:
        return self._w.frame(kind, body)

    def _chunk_sent(self, n: int) -> None:
        self._sent_bytes += n

    @property
    def complete(self) -> bool:
        """Both ENDs verified, our DONE made and the peer's received: each
        side has everything the other sent, saved."""
        return self.ours == CLOSED and self.peers == CLOSED and self._failed is None

    @property
    def stopped_before_state(self) -> bool:
        """The peer stopped after its AUTH, before any of its state, as a peer
        whose directory is busy does: it hung up, or its ERROR gave one of
        RETRY_REASONS (not a complaint about what we sent)."""
        if self.gave_up_at is None:
            return self.peers == STATING
        return self.gave_up_at == STATING and self.gave_up_because.startswith(RETRY_REASONS)

    @property
    def missing(self) -> set[str]:
        """Requested paths the peer did not send."""
        return set(self._pending)

    # --- what we receive --------------------------------------------------

    def next_event(self) -> Event | None:
        """The next event, or None until more bytes arrive."""
        self._check()
        if not self._started:
            raise RuntimeError("next_event() before start()")
        return self._next_handled(self._handle_counted)

    def connection_closed(self) -> None:
        """The peer hung up: ProtocolError unless its END came (and nothing after)."""
        self._check()
        if self.peers != CLOSED or self._frames or self._r.pending:
            what = "END" if self.peers < ENDED else "DONE"
            self._failed = (
                f"connection closed before the peer's {what} (after {self._r.counter} frames):"
                " the session is incomplete"
            )
            raise ProtocolError(self._failed)

    def _unexpected(self, kind: int) -> ProtocolError:
        where = "inside a file" if self._in is not None else f"where {_STAGE[self.peers]} was due"
        return ProtocolError(f"unexpected {NAMES[kind]} from the peer {where}")

    def _handle_counted(self, f: Frame) -> Event | None:
        event = self._handle(f)
        self._got_frames += 1
        return event

    def _handle(self, f: Frame) -> Event | None:
        where = IN_FILE if self._in is not None else self.peers
        handler = TRANSITIONS.get((where, f.type))
        if handler is None:
            raise self._unexpected(f.type)
        return getattr(self, handler)(f)

    # handlers: one per row of TRANSITIONS (each moves the stage it ends)

    def _on_auth(self, f: Frame) -> PeerAuth:
        if not hmac.compare_digest(f.body, self._t):
            raise ProtocolError(
                "the peer's AUTH does not match this session's Hellos"
                " (a modified Hello, or a spliced session)"
            )
        self.peers = STATING
        return PeerAuth()

    def _on_request(self, f: Frame) -> PeerRequest | None:
        if self.ours < REQUESTING:
            raise ProtocolError("the peer sent REQUEST before it could have our state")
        return self._request(f)

    def _on_file(self, f: Frame) -> FileStart:
        return self._file(decode_file_header(f.body))

    def _on_chunk(self, f: Frame) -> FileChunk:
        return self._chunk(f.body)

    def _on_file_end(self, f: Frame) -> FileDone | FileRefused:
        return self._file_end(decode_file_end(f.body))

    def _on_end(self, f: Frame) -> PeerEnd:
        return self._end(decode_end(f.body))

    def _on_done(self, f: Frame) -> PeerDone:
        if self.ours < ENDED:
            raise ProtocolError("the peer sent DONE before it could have our END")
        self.peers = CLOSED
        return PeerDone()

    def _on_error(self, f: Frame) -> Event:
        self.gave_up_at, self.peers = self.peers, CLOSED
        self.gave_up_because = decode_error(f.body)
        raise PeerError(
            f"the peer gave the session up: {self.gave_up_because}", self.gave_up_because
        )

    def _state(self, f: Frame) -> PeerState | None:
        if self._local is None:
            raise RuntimeError("the peer's STATE came before state(): handle PeerAuth first")
        if f.type == STATE:
            batch = decode_state(f.body)
            for r in batch:
                if r.path in self._seen:
                    raise ProtocolError(f"STATE: {r.path!r} twice")
                self._seen.add(r.path)
            if len(self._seen) > self.max_records:
                raise ProtocolError(f"STATE: more than {self.max_records} records")
            for r in batch if self._withheld else ():
                mine = self._withheld.get(r.path)
                if mine is not None and not remote_wins(mine, r):  # the peer keeps its own
                    del self._withheld[r.path]
            part = make_plan(self._local, batch, self.accept)
            self._plan.deletions += part.deletions
            self._plan.requests += part.requests
            self._plan.same += part.same
            self._plan.learned += part.learned
            if part.requests:
                by_path = {r.path: r for r in batch}
                for p in part.requests:
                    self._remote[p] = by_path[p]
            return None
        self._seen = set()
        plan, too_large = self._plan, []
        if any(self._remote[p].size > self.max_file_size for p in plan.requests):
            too_large = [self._remote[p] for p in plan.requests
                         if self._remote[p].size > self.max_file_size]  # fmt: skip
            plan.requests = [p for p in plan.requests if self._remote[p].size <= self.max_file_size]
        self.peers = REQUESTING
        return PeerState(plan, too_large, tuple(self._withheld.values()))

    def _request(self, f: Frame) -> PeerRequest | None:
        if f.type == REQUEST:
            for p in decode_request(f.body):
                if p not in self._advertised:
                    raise ProtocolError(f"REQUEST: {p!r} is not a file this node advertised")
                if p in self._asked:
                    raise ProtocolError(f"REQUEST: {p!r} twice")
                self._asked[p] = None
            return None
        paths, self._asked = tuple(self._asked), {}
        self._to_serve = set(paths)
        self.peers = FILING
        return PeerRequest(paths)

    def _file(self, h: FileHeader) -> FileStart:
        if self.ours < FILING:
            raise ProtocolError("the peer sent FILE before it could have our request")
        if h.path not in self._pending:
            raise ProtocolError(f"FILE: {h.path!r} was not requested, or was sent already")
        adv = self._remote[h.path]
        if (h.size, h.sha256, h.mtime) != (adv.size, adv.hash, adv.mtime):
            raise ProtocolError(f"FILE: {h.path!r} is not the version the peer advertised")
        self._pending.discard(h.path)
        rec = Record(h.path, adv.hash, adv.mtime, adv.size, h.mode, False)
        self._in = FileInFlight(rec)
        self._got_files += 1
        return FileStart(rec)

    def _chunk(self, data: bytes) -> FileChunk:
        f = self._in
        assert f is not None  # _handle passes a CHUNK here only inside a file
        if f.done + len(data) > f.record.size:
            raise ProtocolError(f"CHUNK past the size of {f.record.path!r} ({f.record.size})")
        f.add(data)
        self._got_bytes += len(data)
        return FileChunk(f.record.path, data)

    def _file_end(self, error: str | None) -> FileDone | FileRefused:
        f, self._in = self._in, None
        assert f is not None  # _handle passes a FILE_END here only inside a file
        if error is not None:
            return FileRefused(f.record.path, f"the peer gave it up: {error}")
        f.check_received()
        return FileDone(f.record)

    def _end(self, counts: EndCounts) -> PeerEnd:
        got = EndCounts(self._got_frames, self._got_files, self._got_bytes)
        if counts != got:
            raise ProtocolError(
                f"the peer's END says it sent {tuple(counts)} (frames, files, bytes);"
                f" {tuple(got)} arrived"
            )
        self.peers = ENDED
        return PeerEnd(counts)
