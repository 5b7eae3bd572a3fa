"""What follows the Hellos of a session, v1 or v2, on the one driver.

The engine has done the Hellos and picked the protocol; :class:`Exchange`
handles the events of its machine (v2's :class:`~owsync.core.session2.Session2`,
or v1's behind :class:`~owsync.core.session1.Session1`: the same events)
with the replica's I/O until the session is complete.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from functools import partial

from ..core import session2 as s2
from ..core.session1 import Event as Event
from ..core.session1 import Refused, Session1
from ..io.transport import PeerClosed, PeerTimeout, Stopped
from .context import Context
from .driver import Driver, file_out
from .replica import Replica, Tally

log = logging.getLogger("owsync")


def check_time(ctx: Context, deadline: float) -> None:
    if ctx.should_stop():
        raise Stopped()
    if time.monotonic() > deadline:
        raise PeerTimeout(f"session still unfinished after {ctx.session_timeout:.0f} s")


class Exchange(Driver[Event]):
    """One session after its Hellos: the machine's events carried out on the
    replica, the files the peer asks for read from disk as they leave.

    What it did is its own to count, read by the engine once it is over:
    :attr:`tally` (the replica's steps), :attr:`files_sent`, :attr:`delivered`
    and :attr:`busy`."""

    def __init__(self, ch, ctx: Context, replica: Replica, machine: Session1 | s2.Session2,
                 peer: str, deadline: float) -> None:  # fmt: skip
        super().__init__(ch, machine)
        self.m = machine
        self.ctx = ctx
        self.replica = replica
        self.peer = peer  # for the logs
        self.deadline = deadline
        self.tally = Tally()  # what the replica did here
        self.files_sent = 0  # files served whole
        # (path, hash) the peer holds as we do once the session completes:
        # served whole, or found alike in both states
        self.delivered: list[tuple[str, str]] = []
        # the peer stopped before its state (its directory was busy): worth a
        # quick retry, not a backoff
        self.busy = False

    def run(self, data: bytes) -> None:
        """Until both sides have everything (v2: DONE both ways; v1: both
        EndOfSyncs, all sent); raises why not.  An ERROR (v2) tells the
        peer why, if it can still hear."""
        m = self.m
        try:
            start = m.start()
            if start:
                self.ch.send_raw(start)
            self.loop(data)
        except s2.PeerError:
            self.busy = m.stopped_before_state
            raise
        except Exception as exc:
            self.say_last(m.error, _why(exc))
            raise
        if m.missing:
            log.info("%d requested file(s) did not arrive from %s", len(m.missing), self.peer)

    def on_event(self, event: Event) -> None:
        m, replica, peer = self.m, self.replica, self.peer
        match event:
            case s2.FileChunk(data=data):
                replica.add_chunk(data)
            case s2.FileStart(record=rec):
                replica.begin_file(rec)
            case s2.FileDone(record=rec):
                self.tally.add(replica.end_file(rec))
            case s2.PeerAuth():
                self.out.put(m.state(replica.open()))
            case s2.PeerState(plan=plan, too_large=too_large, withheld=withheld):
                for rec in too_large:
                    log.warning("not receiving %s from %s: too large (%d bytes,"
                                " max_file_size %d)", rec.path, peer, rec.size,
                                self.ctx.max_file_size)  # fmt: skip
                for rec in withheld:
                    log.warning("not sending %s to %s: too large (%d bytes,"
                                " max_file_size %d)", rec.path, peer, rec.size,
                                self.ctx.max_file_size)  # fmt: skip
                self.tally.add(replica.apply_deletions(plan.deletions))
                replica.learn(plan.learned)
                # the peer holds these as we do: a write made here is not
                # pending any more (a later write of the peer's is no conflict)
                self.delivered.extend(plan.same)
                self.out.put(m.request(plan))
            case s2.PeerRequest(paths=paths):
                self.out.put(self._serve(paths))
            case s2.FileRefused(path=path, reason=why):
                replica.drop_file()
                log.warning("not receiving %s from %s: %s", path, peer, why)
            case Refused(path=path, reason=why):
                log.warning("refused %r from %s: %s", path, peer, why)
            case s2.PeerEnd() | s2.PeerDone():
                pass  # nothing to do here (core/session2.py)

    def finished(self) -> bool:
        m = self.m
        if m.can_close and not self.out:  # both ENDs: in place and saved, then say so
            self.tally.add(self.replica.save(final=False))
            self.ch.send_raw(m.done())
        return m.complete and self.ch.flushed

    def wait(self) -> bytes:
        check_time(self.ctx, self.deadline)
        try:
            return self.ch.pump_bytes()
        except PeerClosed:
            m = self.m
            self.busy = m.stopped_before_state
            m.connection_closed()  # v2: ProtocolError, unless the peer's DONE came
            if m.complete and self.ch.flushed:
                return b""
            raise

    def _serve(self, paths: tuple[str, ...]) -> Iterator[bytes]:
        """The files the peer asked for, each read a chunk at a time as its
        frames leave, then the end of our stream.  A file that changed since
        the scan is given up (the next session sends it)."""
        m, replica = self.m, self.replica
        for path in paths:
            rec = replica.records.get(path)
            if rec is None or rec.deleted:
                continue  # (v1 may ask for anything)
            start = partial(m.file_start, path)
            got = yield from file_out(m, replica.dir, rec, start, self.ctx.max_file_size)
            if got is None:
                assert rec.hash is not None  # advertised, so live: it has its content's hash
                self.delivered.append((path, rec.hash))
                self.files_sent += 1
            elif got.started:
                log.info("not sending %s: %s", path, got.why)
            elif got.why != "too large":  # (logged already)
                log.warning("not sending %s: %s", path, got.why)
        yield m.end()


def _why(exc: Exception) -> str:
    if isinstance(exc, Stopped):
        return "the peer is shutting down"
    if isinstance(exc, OSError):
        return f"local I/O error on the peer: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__
