"""One loop for every protocol: v1 and v2 sessions, and the live link.

A :class:`Driver` pumps its :class:`~owsync.io.transport.Channel`, feeds
what arrives to its machine (bytes in, typed events out: v1 through
:class:`owsync.core.session1.Session1`, v2's
:class:`~owsync.core.session2.Session2`, the live link's
:class:`~owsync.core.live.LiveLink`), hands each event to the protocol's
handler (the subclass), and sends what the handler queued in its one
:class:`Outbox` as fast as the socket drains.

    loop:  bytes -> machine.receive_data; each event -> on_event()
           settle()                   (after the events: posts, retries)
           drain the outbox           (until OUT_BUFFER bytes wait on the socket)
           finished()? -> return      (may first queue a last frame)
           wait() -> bytes            (the socket, a post, a timeout)
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Generator, Iterator
from typing import Generic, NamedTuple, Protocol, TypeVar

from ..core.protocol import ProtocolError
from ..core.protocol2 import CHUNK_SIZE
from ..core.session2 import FileSender
from ..core.state import Record
from ..io.syncdir import SyncDir, UnsafePath
from ..io.transport import Channel, PeerClosed

log = logging.getLogger("owsync")

OUT_BUFFER = 256 * 1024  # bytes queued on the socket before more is read from disk

E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)


class Machine(Protocol[E_co]):
    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> E_co | None: ...


class Outbox:
    """What this side sends, in order: iterators of frames, each frame made
    (sealed) only when its turn to leave comes, so that frames are sealed in
    the order they go and a file is read only as fast as it is sent.

    Files (:meth:`put_bulk`) wait while anything else (:meth:`put`) is
    queued: a live link's updates and answers overtake a long file."""

    def __init__(self) -> None:
        self._first: deque[Iterator[bytes]] = deque()
        self._bulk: deque[Iterator[bytes]] = deque()

    def put(self, frames: Iterator[bytes]) -> None:
        self._first.append(frames)

    def put_bulk(self, frames: Iterator[bytes]) -> None:
        self._bulk.append(frames)

    def __bool__(self) -> bool:
        return bool(self._first or self._bulk)

    def clear(self) -> None:
        self._first.clear()
        self._bulk.clear()

    def drain(self, ch: Channel) -> int:
        """Queue frames on the channel until OUT_BUFFER bytes wait there or
        nothing is left; the number of frames queued."""
        n = 0
        while ch.out_bytes < OUT_BUFFER:
            lane = self._first or self._bulk
            if not lane:
                break
            frame = next(lane[0], None)
            if frame is None:
                lane.popleft()
            elif frame:  # (v1 makes a file's frame at its end: nothing before)
                ch.send_raw(frame)
                n += 1
        return n


def later(make: Callable[..., bytes | Iterator[bytes]], *args) -> Iterator[bytes]:
    """The frames of ``make(*args)``, made when their turn to be sent comes."""
    got = make(*args)
    if isinstance(got, bytes):
        yield got
    else:
        yield from got


class Driver(Generic[E]):
    """The loop; a protocol's handler subclasses it."""

    def __init__(self, ch: Channel, machine: Machine[E]) -> None:
        self.ch = ch
        self.machine = machine
        self.out = Outbox()

    def loop(self, data: bytes) -> None:
        """Run until :meth:`finished`; what the handlers raise ends it."""
        m, ch, out, handle = self.machine, self.ch, self.out, self.on_event
        while True:
            if data:
                m.receive_data(data)
            while (event := m.next_event()) is not None:
                handle(event)
            self.settle()
            if out:
                self.sent(out.drain(ch))
            if self.finished():
                return
            data = self.wait()

    # --- the handler's part ---------------------------------------------------

    def on_event(self, event: E) -> None:
        raise NotImplementedError

    def settle(self) -> None:
        """After the events of a read: what they together call for."""

    def sent(self, frames: int) -> None:
        """``frames`` frames of the outbox went to the socket's queue."""

    def finished(self) -> bool:
        raise NotImplementedError

    def wait(self) -> bytes:
        raise NotImplementedError

    # --- for the handlers -----------------------------------------------------

    def say_last(self, make: Callable[[str], bytes], why: str) -> None:
        """A last frame (ERROR, BYE: ``make(why)``), sent if the machine may
        still send and the socket takes it now: best effort, never waited for."""
        try:
            frame = make(why)
            if frame:
                self.ch.send_raw(frame)
            self.ch.try_flush()
        except (RuntimeError, ValueError, ProtocolError, PeerClosed, OSError):
            pass


# --- serving a file -------------------------------------------------------------------


class NotSent(NamedTuple):
    """A requested file that did not go: why, and whether its FILE went out
    (then a FILE_END gave it up) or nothing did."""

    why: str
    started: bool


def file_out(
    m: FileSender, sd: SyncDir, rec: Record, start: Callable[[int], bytes], max_file_size: int
) -> Generator[bytes, None, NotSent | None]:
    """The frames of one requested file, read from ``sd`` a chunk at a time
    as they leave: ``start(mode)`` (its FILE), its chunks, FILE_END (by the
    machine ``m``, a v1, v2 or live one).  None when it went whole, else why
    not: over max_file_size or what the protocol carries, unreadable, or
    given up after its FILE (it changed while being read)."""
    if rec.size > max_file_size or not m.carries(rec.size):
        log.warning("not sending %s: too large (%d bytes, max_file_size %d)",
                    rec.path, rec.size, max_file_size)  # fmt: skip
        return NotSent("too large", False)
    try:
        f, st = sd.open_read(rec.path)
    except (OSError, UnsafePath) as exc:
        return NotSent(f"cannot be read: {getattr(exc, 'strerror', None) or exc}", False)
    with f:
        frame = start(st.st_mode)
        if frame:
            yield frame
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
            if frame := m.file_chunk(chunk):  # (v1 sends the whole file at its end)
                yield frame
        if why is None:
            why = yield from m.finish_file()
        else:
            yield m.file_abort(why)
    return None if why is None else NotSent(why, True)
