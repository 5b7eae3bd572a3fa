"""TCP: connecting to a peer and the listener that serves incoming sessions."""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable

from ..core.peer import Peer

log = logging.getLogger("owsync")

MAX_SESSIONS = 50
CONNECT_TIMEOUT = 10.0


def _name(host: str | None) -> bytes | str | None:
    """A host as getaddrinfo takes it without loading the idna codec (with
    unicodedata and stringprep, 0.3 MiB) for a str: an ASCII name as bytes."""
    return host.encode() if host and host.isascii() else host


def connect(peer: Peer, default_port: int, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """A socket connected to ``peer``, bound first to its source address if any."""
    port = peer.port or default_port
    infos = socket.getaddrinfo(_name(peer.host), port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    last: OSError | None = None
    for family, stype, proto, _, addr in infos:
        s = socket.socket(family, stype, proto)
        try:
            if peer.source:
                src = socket.getaddrinfo(_name(peer.source), 0, family, stype)[0][4]
                s.bind(src)
            s.settimeout(timeout)
            s.connect(addr)
            s.settimeout(None)
            return s
        except OSError as exc:
            s.close()
            last = exc
    raise last or OSError(f"cannot resolve {peer.host}")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; ``::`` is dual-stack, ``0.0.0.0`` IPv4 only."""
    infos = socket.getaddrinfo(
        _name(host) or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    family, stype, proto, _, addr = infos[0]
    s = socket.socket(family, stype, proto)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(addr)
        s.listen(128)
    except BaseException:
        s.close()
        raise
    return s


def peer_label(addr) -> str:
    host, port = addr[0], addr[1]
    if host.startswith("::ffff:"):
        host = host[7:]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Conn:
    __slots__ = ("sock", "since", "handshaking")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.since = time.monotonic()
        self.handshaking = True


class Listener:
    """Accepts connections and runs ``handler(sock, label, on_hello)`` in a thread each.

    At most ``max_sessions`` connections are served at once.  When full, a new
    connection evicts the oldest one that has not yet completed its Hello, so
    a flood of idle connections cannot lock real peers out; if every slot is
    in a real session, the new connection is closed.
    """

    def __init__(
        self,
        sock: socket.socket,
        handler: Callable[[socket.socket, str, Callable[[], None]], None],
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self.sock = sock
        self.handler = handler
        self.max_sessions = max_sessions
        self._conns: set[_Conn] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        r, w = socket.socketpair()
        self._wake_r, self._wake_w = r, w

    @property
    def address(self):
        return self.sock.getsockname()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def active(self) -> int:
        with self._lock:
            return len(self._conns)

    def serve_forever(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select():
                    if key.fileobj is self.sock:
                        self._accept()
        finally:
            sel.close()
            self.sock.close()
            self._wake_r.close()
            self._wake_w.close()

    def _accept(self) -> None:
        try:
            csock, addr = self.sock.accept()
        except OSError:
            return
        conn = _Conn(csock)
        with self._lock:
            if len(self._conns) >= self.max_sessions:
                idle = [c for c in self._conns if c.handshaking]
                if not idle:
                    log.warning(
                        "refusing %s: %d sessions already", peer_label(addr), self.max_sessions
                    )
                    csock.close()
                    return
                victim = min(idle, key=lambda c: c.since)
                victim.handshaking = False
                self._conns.discard(victim)
                with contextlib.suppress(OSError):
                    victim.sock.shutdown(socket.SHUT_RDWR)
            self._conns.add(conn)
        t = threading.Thread(target=self._run, args=(conn, peer_label(addr)), daemon=True)
        t.start()

    def _run(self, conn: _Conn, label: str) -> None:
        def on_hello() -> None:
            conn.handshaking = False

        try:
            self.handler(conn.sock, label, on_hello)
        finally:
            with self._lock:
                self._conns.discard(conn)


class Serving:
    """Bind ``host``/``port`` and serve it with a :class:`Listener`.

    An address that cannot be had (taken by another program, or not
    configured yet while a router boots) is retried with backoff until
    ``stopping`` is set; ``error`` says why meanwhile (None while listening).
    """

    RETRY_FIRST = 2.0  # seconds, doubling up to the cap
    RETRY_CAP = 60.0

    def __init__(self, host: str, port: int, handler, stopping: threading.Event) -> None:
        self.host, self.port = host, port
        self.handler = handler
        self.stopping = stopping
        self.error: str | None = None
        self.listener: Listener | None = None
        self.tried = threading.Event()  # the first bind was tried (it worked, or error says why)

    def run(self) -> None:
        delay = self.RETRY_FIRST
        while not self.stopping.is_set():
            try:
                sock = bind(self.host, self.port)
            except OSError as exc:
                why = exc.strerror or str(exc)
                if self.error != why:
                    log.error("cannot listen on %s port %d: %s; syncing outward only,"
                              " retrying", self.host, self.port, why)  # fmt: skip
                self.error = why
                self.tried.set()
                if self.stopping.wait(delay):
                    return
                delay = min(self.RETRY_CAP, delay * 2)
                continue
            if self.error:
                log.info("listening on %s port %d now", self.host, self.port)
            self.error = None
            self.listener = Listener(sock, self.handler)
            self.tried.set()
            if self.stopping.is_set():  # stop() came between the bind and now
                sock.close()
                return
            self.listener.serve_forever()
            return

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()

    def active(self) -> int:
        return self.listener.active() if self.listener is not None else 0
