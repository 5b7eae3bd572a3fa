"""A channel for the frames of a session or a link, over a non-blocking socket.

It moves bytes: the session machines (owsync.core) make and read the frames;
the channel seals only the first one, the Hello.

The channel never blocks on a write while the peer has something to say:
every wait selects for reading as well as writing, so two nodes that send
each other large files at once cannot deadlock (1.2.0 does, at 8 MB).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from collections import deque

from ..core import protocol
from ..core.protocol import ProtocolError

RECV_SIZE = 256 * 1024
BATCH = 64  # buffers handed to one sendmsg()


class PeerClosed(Exception):
    pass


class PeerTimeout(Exception):
    pass


class Stopped(Exception):
    """The process is shutting down."""


STOP_POLL = 0.5  # how often a waiting channel checks for shutdown


class Channel:
    def __init__(
        self,
        sock: socket.socket,
        cipher,
        frame_limit: int,
        idle_timeout: float,
        should_stop=lambda: False,
    ) -> None:
        self.should_stop = should_stop
        self.sock = sock
        self.cipher = cipher
        self.idle_timeout = idle_timeout
        self.frame_limit = frame_limit
        self._out: deque[memoryview] = deque()
        self.out_bytes = 0
        self.bytes_in = 0
        self.bytes_out = 0
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sel = selectors.DefaultSelector()
        self._sel.register(sock, selectors.EVENT_READ)
        self._mask = selectors.EVENT_READ
        self._wake: socket.socket | None = None  # set_wake's socket

    def close(self) -> None:
        self._sel.close()
        self.sock.close()

    def send_payload(self, payload: bytes) -> int:
        """Queue a v1 frame of this exact payload, sealed (a Hello: the machines
        make every frame after it); returns its size.  ProtocolError if too large."""
        parts = self.cipher.seal_parts([payload])
        size = sum(len(p) for p in parts)
        if size > self.frame_limit:
            raise ProtocolError(f"message of {size} bytes exceeds the frame limit")
        self._out.append(memoryview(protocol.frame_header(size)))
        self._out.extend(memoryview(p) for p in parts)
        self.out_bytes += size + 4
        return size

    def send_raw(self, data: bytes) -> None:
        """Queue bytes as they are: frames made (sealed) by a machine."""
        self._out.append(memoryview(data))
        self.out_bytes += len(data)

    @property
    def flushed(self) -> bool:
        return not self._out

    def pump_bytes(self) -> bytes:
        """Wait once for the socket; write what fits, return the bytes that arrived."""
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._out else 0)
        if want != self._mask:
            self._sel.modify(self.sock, want)
            self._mask = want
        deadline = time.monotonic() + self.idle_timeout
        while True:
            events = self._sel.select(min(STOP_POLL, max(0.0, deadline - time.monotonic())))
            if events:
                break
            if self.should_stop():
                raise Stopped()
            if time.monotonic() >= deadline:
                raise PeerTimeout(f"peer silent for {self.idle_timeout:.0f} s")
        data = b""
        for key, mask in events:
            if key.fileobj is not self.sock:  # the wake socket: another thread posted
                wake = self._wake
                assert wake is not None and key.fileobj is wake  # the only other one
                with contextlib.suppress(OSError):
                    while wake.recv(4096):
                        pass
                continue
            if mask & selectors.EVENT_WRITE:
                self._write()
            if mask & selectors.EVENT_READ:
                data = self._read()
        return data

    def set_wake(self, sock: socket.socket) -> None:
        """Also return from :meth:`pump_bytes` (with nothing) when ``sock``
        becomes readable: how another thread wakes a long-lived link."""
        self._wake = sock
        self._sel.register(sock, selectors.EVENT_READ)

    def linger(self, timeout: float, most: int = 64 * 1024 * 1024) -> None:
        """End our side of the stream, then read and drop what the peer still
        sends until it hangs up (at most ``timeout`` seconds, ``most`` bytes):
        a peer busy writing sees the end of the stream, not a reset."""
        try:
            self._write()
            self.sock.shutdown(socket.SHUT_WR)
        except (OSError, PeerClosed):
            return
        self.wait_closed(timeout, most)

    def try_flush(self) -> None:
        """Write what the socket takes now, without waiting (a last frame)."""
        self._write()

    def _write(self) -> None:
        while self._out:
            bufs = [self._out[i] for i in range(min(BATCH, len(self._out)))]
            try:
                n = self.sock.sendmsg(bufs)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                raise PeerClosed(f"connection lost while sending: {exc.strerror}") from None
            self.bytes_out += n
            self.out_bytes -= n
            while n:
                head = self._out[0]
                if len(head) <= n:
                    n -= len(head)
                    self._out.popleft()
                else:
                    self._out[0] = head[n:]
                    n = 0

    def _read(self) -> bytes:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as exc:
            raise PeerClosed(f"connection lost: {exc.strerror}") from None
        if not data:
            raise PeerClosed("peer closed the connection")
        self.bytes_in += len(data)
        return data

    def wait_closed(self, timeout: float, most: int | None = None) -> bool:
        """Wait for the peer to hang up (it does once its side is saved),
        dropping what it still sends (``most`` bytes at most, if given).

        False when it did not within ``timeout``: what it received is unknown
        (a link that went down after our last bytes left, say)."""
        deadline = time.monotonic() + timeout
        self.sock.setblocking(True)
        while (left := deadline - time.monotonic()) > 0 and (most is None or most > 0):
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(RECV_SIZE)
                if not data:
                    return True
                if most is not None:
                    most -= len(data)
            except TimeoutError:
                return False
            except OSError:  # reset: the peer is gone all the same
                return True
        return False
