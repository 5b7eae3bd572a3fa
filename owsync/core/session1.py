"""Protocol v1 behind protocol v2's API.  Pure code, no I/O.

:class:`Session1` wraps the v1 machine (:class:`owsync.core.session.Session`,
its Hellos done) so that one driver runs both protocols: bytes in through
:meth:`~Session1.receive_data`, the typed events of
:mod:`owsync.core.session2` out of :meth:`~Session1.next_event`, frames made
by the same calls as v2's.  The frames on the wire are those of owsync
1.2.0, byte for byte (one sealed JSON message per frame).

    machine = Session(accept, max_file_size)     # Hellos exchanged with it
    m = Session1(machine, cipher, frame_limit)
    send(m.start())                 # nothing: v1 has no AUTH
    on bytes received: m.receive_data(data), then
    while (event := m.next_event()) is not None:
        PeerAuth     -> (at once: the Hellos were accepted) lock, scan, send
                        every frame of m.state(records)
        PeerState    -> apply event.plan.deletions, send m.request(event.plan)
                        (too_large is empty: v1 asks for every file it plans
                        to take, as 1.2.0 expects, and refuses one over
                        max_file_size when it arrives)
        PeerRequest  -> per path: m.file_start(path, mode), m.file_chunk()
                        as v2 (nothing goes out yet), m.file_end(): the whole
                        FileContent; at last m.end() (EndOfSync)
        FileStart, FileChunk, FileDone -> a FileContent that was requested
                        and matches its advertised hash, as v2 delivers one
        Refused      -> a FileContent not taken: log it
        PeerEnd      -> the peer's EndOfSync
    v1 has no DONE (can_close is never true): the initiator waits for the
    peer to hang up instead.  error() makes nothing: v1 has no ERROR.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Iterator
from typing import NamedTuple

from .plan import Plan
from .protocol import (
    EndOfSync,
    FileContent,
    FrameDecoder,
    Message,
    ProtocolError,
    decode,
    encode_parts,
    frame_header,
)
from .protocol2 import CHUNK, EndCounts
from .session import (
    SCAN,
    STATE,
    FileArrived,
    FileRefused,
    PeerEnd,
    PeerRequest,
    PeerState,
    Session,
    SessionAbort,
)
from .session import Event as Event1
from .session2 import Event as Event2
from .session2 import FileChunk, FileDone, FileInFlight, FileSender, FileStart, PeerAuth
from .session2 import PeerEnd as PeerEnd2
from .session2 import PeerRequest as PeerRequest2
from .session2 import PeerState as PeerState2
from .state import Record

JOIN_UNDER = 64 * 1024  # a file's frame is sent as one piece up to this size


class Refused(NamedTuple):
    """A FileContent this side did not take (not requested, too large, not
    the advertised content): log it.  (v2 refuses such a file as a protocol
    error; v1 carries on, as 1.2.0 does.)"""

    path: str
    reason: str


Event = Event2 | Refused


class _Counted(FileInFlight):
    """A file on its way out over v1: counted, not hashed (as 1.2.0 sends
    what it reads; the receiver checks the advertised hash)."""

    __slots__ = ()

    def __init__(self, record: Record) -> None:
        self.record, self.done = record, 0

    def add(self, data: bytes) -> None:
        self.done += len(data)

    def whole(self) -> bool:
        return self.done == self.record.size


class Session1(FileSender):
    def __init__(self, machine: Session, cipher, frame_limit: int) -> None:
        if machine.state != SCAN:
            raise RuntimeError("Session1 takes a v1 machine whose Hellos are done")
        self.machine = machine
        self.accept = machine.accept
        self.cipher = cipher
        self.frame_limit = frame_limit
        self._decoder = FrameDecoder(frame_limit)
        self._decoder.limit = frame_limit  # the Hello, cut out by the caller, was the first
        self._payloads: deque[bytes | bytearray] = deque()
        self._events: deque[Event] = deque()
        self._started = self._ended = False
        self._to_serve: set[str] = set()
        self._out: FileInFlight | None = None
        self._mode = 0
        self._buf = bytearray()
        self._got = [0, 0, 0]  # frames, files, bytes

    # --- what we send -----------------------------------------------------

    def start(self) -> bytes:
        """Nothing to send (v1 has no AUTH); the first event is PeerAuth."""
        if self._started:
            raise RuntimeError("start() twice")
        self._started = True
        self._events.append(PeerAuth())
        return b""

    def state(self, records: dict[str, Record]) -> Iterator[bytes]:
        msg = self.machine.state_message(records)
        try:
            frame = self._message(msg)
        except ProtocolError as exc:
            raise SessionAbort(
                f"this node's state ({len(msg.files)} files) is more than protocol v1 carries"
                f" ({exc}); the peer speaks v1 only (owsync 1.2.0?)"
            ) from None
        return iter((frame,))

    def request(self, plan: Plan) -> Iterator[bytes]:
        return iter((self._message(self.machine.request(plan)),))

    def carries(self, size: int) -> bool:
        """Whether a file of ``size`` bytes fits in a frame (as hex, in JSON)."""
        return 2 * size + 4096 <= self.frame_limit

    def file_start(self, path: str, mode: int) -> bytes:
        if self._ended or self._out is not None:
            raise RuntimeError("file_start() after end(), or inside a file")
        if path not in self._to_serve:
            raise RuntimeError(f"file_start() for {path!r}: not requested, or sent already")
        self._to_serve.discard(path)
        rec = self.machine._local[path]
        self._out, self._mode = _Counted(rec), mode & 0o777
        self._buf = bytearray(rec.size)  # the content, held until it is all read
        return b""

    def _frame(self, kind: int, body: bytes = b"") -> bytes:
        assert kind == CHUNK and self._out is not None  # FileSender makes nothing else here
        at = self._out.done - len(body)  # (counted already)
        self._buf[at : at + len(body)] = body
        return b""

    def finish_file(self) -> Generator[bytes, None, str | None]:
        """The whole FileContent's frame, in the pieces the cipher made (never
        joined: a large file's hex is not copied once more), and None; or
        nothing, and why, when less was read than advertised (the file
        changed meanwhile).  The content is not hashed here: the receiver
        checks it against the advertised hash, as with 1.2.0."""
        out = self._out
        if out is None:
            raise RuntimeError("file_end() outside a file")
        data, self._buf, self._out = self._buf, bytearray(), None
        if not out.whole():
            return "changed while being sent"
        pieces = self._pieces(FileContent(out.record.path, self._mode, data))
        if len(data) <= JOIN_UNDER:
            yield b"".join(pieces)
        else:
            yield from pieces
        return None

    def file_end(self) -> tuple[bytes, str | None]:
        """finish_file()'s frame whole, and its why."""
        pieces, gen = [], self.finish_file()
        while True:
            try:
                pieces.append(next(gen))
            except StopIteration as stop:
                return b"".join(pieces), stop.value

    def file_abort(self, reason: str) -> bytes:
        if self._out is None:
            raise RuntimeError("file_abort() outside a file")
        self._out, self._buf = None, bytearray()
        return b""

    def end(self) -> bytes:
        if self._ended or self._out is not None:
            raise RuntimeError("end() twice, or inside a file")
        self._ended = True
        self._to_serve.clear()
        return self._message(EndOfSync())

    @property
    def can_close(self) -> bool:
        return False  # no DONE in v1

    def done(self) -> bytes:
        raise RuntimeError("protocol v1 has no DONE")

    def error(self, text: str) -> bytes:
        return b""  # no ERROR in v1: the peer sees the connection close

    def _message(self, msg: Message) -> bytes:
        return b"".join(self._pieces(msg))

    def _pieces(self, msg: Message) -> list[bytes]:
        """The frame of ``msg``: its length, then its payload as sealed."""
        parts = self.cipher.seal_parts(encode_parts(msg))
        size = sum(len(p) for p in parts)
        if size > self.frame_limit:
            raise ProtocolError(f"message of {size} bytes exceeds the frame limit")
        return [frame_header(size), *parts]

    @property
    def complete(self) -> bool:
        """The peer's EndOfSync came and ours is made."""
        return self.machine.complete and self._ended

    @property
    def stopped_before_state(self) -> bool:
        """The peer stopped after its Hello, before its state arrived: what a
        peer whose directory is busy does."""
        return self.machine.state in (SCAN, STATE)

    @property
    def missing(self) -> set[str]:
        return self.machine.missing

    # --- what we receive --------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        self._payloads.extend(self._decoder.feed(data))

    def next_event(self) -> Event | None:
        if not self._started:
            raise RuntimeError("next_event() before start()")
        while not self._events and self._payloads:
            payload = self._payloads.popleft()
            # the Hello is behind: the clock matters to nothing that may come
            self._translate(self.machine.receive(decode(self.cipher.open(payload)), 0.0))
        return self._events.popleft() if self._events else None

    def connection_closed(self) -> None:
        """The peer hung up: nothing to say (the caller's PeerClosed says it)."""

    def _translate(self, event: Event1) -> None:
        self._got[0] += 1
        match event:
            case PeerState(plan=plan):
                self._events.append(PeerState2(plan, []))
            case PeerRequest(paths=paths):
                self._to_serve = set(paths)
                self._events.append(PeerRequest2(paths))
            case FileArrived(record=rec, data=data):
                self._got[1] += 1
                self._got[2] += len(data)
                self._events.extend((FileStart(rec), FileChunk(rec.path, data), FileDone(rec)))
            case FileRefused(path=path, reason=why):
                self._events.append(Refused(path, why))
            case PeerEnd():
                self._events.append(PeerEnd2(EndCounts(*self._got)))
