"""What follows the Hellos: the exchange of protocol v1 or of protocol v2.

Each drives its session machine with the replica's I/O until the session is
complete; the engine has done the Hellos, and picked one.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from functools import partial

from ..core import session2 as s2
from ..core.protocol import EndOfSync, FileContent, Message, ProtocolError
from ..core.protocol2 import CHUNK_SIZE
from ..core.session import (
    FileArrived,
    FileRefused,
    PeerRequest,
    PeerState,
    Session,
)
from ..core.session2 import Session2
from ..io.syncdir import UnsafePath
from ..io.transport import Channel, PeerClosed, PeerTimeout, Stopped
from .context import Context, SessionResult
from .replica import Replica, apply_deletions

log = logging.getLogger("owsync")

OUT_BUFFER = 256 * 1024  # bytes queued on the socket before more is read from disk


def check_time(ctx: Context, deadline: float) -> None:
    if ctx.should_stop():
        raise Stopped()
    if time.monotonic() > deadline:
        raise PeerTimeout(f"session still unfinished after {ctx.session_timeout:.0f} s")


def drive_v1(ch, ctx, replica: Replica, machine: Session, result, first, deadline) -> None:
    outgoing: Iterator[Message] | None = None
    received = first
    while True:
        for msg in received:
            event = machine.receive(msg, ctx.clock())
            if isinstance(event, PeerState):
                apply_deletions(replica, event.plan.deletions, result)
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
        check_time(ctx, deadline)
        received = ch.pump()
    if machine.missing:
        log.info("%d requested file(s) did not arrive from %s", len(machine.missing), result.peer)


def drive_v2(
    ch: Channel,
    ctx: Context,
    replica: Replica,
    m: Session2,
    result: SessionResult,
    data: bytes,
    deadline: float,
) -> None:
    """Protocol v2 after the Hellos: typed frames, files streamed from and to disk.

    What this side sends is a queue of frame iterators, taken in order and
    only as fast as the socket drains (so memory stays at a few chunks); a
    step that may start only once the previous one is all sent is queued as
    a function that makes its iterator.
    """
    try:
        _exchange_v2(ch, ctx, replica, m, result, data, deadline)
    except s2.PeerError:
        result.busy = m.stopped_before_state  # worth a quick retry, not a backoff
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


def _exchange_v2(
    ch: Channel,
    ctx: Context,
    replica: Replica,
    m: Session2,
    result: SessionResult,
    data: bytes,
    deadline: float,
) -> None:
    # frame iterators to send in turn; a function makes one when its turn comes
    out: deque[Iterator[bytes] | Callable[[], Iterator[bytes]]] = deque()
    ch.send_raw(m.start())
    while True:
        if data:
            m.receive_data(data)
        while (event := m.next_event()) is not None:
            match event:
                case s2.FileChunk():
                    replica.add_chunk(event.data)
                case s2.FileStart():
                    replica.begin_file(event.record)
                case s2.FileDone():
                    replica.end_file(event.record, result)
                case s2.PeerAuth():
                    out.append(m.state(replica.open()))
                case s2.PeerState():
                    for rec in event.too_large:
                        log.warning("not receiving %s from %s: too large (%d bytes,"
                                    " max_file_size %d)", rec.path, result.peer, rec.size,
                                    ctx.max_file_size)  # fmt: skip
                    apply_deletions(replica, event.plan.deletions, result)
                    out.append(partial(m.request, event.plan))
                case s2.PeerRequest():
                    out.append(partial(_serve_v2, replica, m, event.paths, result))
                case s2.FileRefused():
                    replica.drop_file()
                    log.warning(
                        "not receiving %s from %s: %s", event.path, result.peer, event.reason
                    )
                case s2.PeerEnd() | s2.PeerDone():
                    pass  # nothing to do here (core/session2.py)
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
            replica.save(result, final=False)
            ch.send_raw(m.done())
        if m.complete and ch.flushed:
            break
        check_time(ctx, deadline)
        try:
            data = ch.pump_bytes()
        except PeerClosed:
            result.busy = m.stopped_before_state
            m.connection_closed()  # ProtocolError, unless the peer's DONE came
            if m.complete and ch.flushed:
                break
            raise


def _to_send(replica: Replica, path: str, size: int, read):
    """``read(path)`` for a file the peer asked for; None (logged) when it is
    over max_file_size or cannot be read."""
    limit = replica.ctx.max_file_size
    if size > limit:
        log.warning("not sending %s: too large (%d bytes, max_file_size %d)", path, size, limit)
        return None
    try:
        return read(path)
    except (OSError, UnsafePath) as exc:
        log.warning("not sending %s: %s", path, getattr(exc, "strerror", None) or exc)
        return None


def _serve(replica: Replica, ch: Channel, paths: tuple[str, ...]) -> Iterator[Message]:
    limit = replica.ctx.max_file_size
    for path in paths:
        rec = replica.records.get(path)
        if rec is None or rec.deleted:
            continue
        got = _to_send(replica, path, rec.size, replica.dir.read)
        if got is None:
            continue
        data, st = got
        if len(data) > limit or 2 * len(data) + 4096 > ch.frame_limit:
            log.warning("not sending %s: too large (%d bytes)", path, len(data))
            continue
        assert rec.hash is not None  # live: it has its content's hash
        replica.sent.append((path, rec.hash))
        yield FileContent(path, st.st_mode & 0o777, data)
    yield EndOfSync()


def _serve_v2(replica: Replica, m: Session2, paths, result: SessionResult) -> Iterator[bytes]:
    """The frames of the files the peer asked for, read from disk a chunk at a
    time, then END.  A file that changed since the scan is given up with a
    FILE_END that says so (the next session sends it)."""
    for path in paths:
        rec = replica.records[path]
        got = _to_send(replica, path, rec.size, replica.dir.open_read)
        if got is None:
            continue
        f, st = got
        with f:
            why = yield from file_frames(m, f, m.file_start(path, st.st_mode))
        if why is None:
            assert rec.hash is not None  # advertised, so live: it has its content's hash
            replica.sent.append((path, rec.hash))
            result.sent += 1
        else:
            log.info("not sending %s: %s", path, why)
    yield m.end()


def file_frames(m, f, start: bytes) -> Generator[bytes, None, str | None]:
    """The frames of one file on its way out, on v2 or a live link (``m``):
    ``start`` (its FILE), its chunks as ``f`` reads them, FILE_END.  Returns
    None when it went whole, else why it was given up (it changed while
    being read, it could not be read)."""
    yield start
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
    return why
